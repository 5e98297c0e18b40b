// @huggingface/inference's tokenClassification against this service, as a JS user calls it:
// an InferenceClient with the key and endpointUrl. Reads {url, key, texts, cases} as JSON on
// stdin; prints {answers, cases} as JSON: the answer per text, and per case (extra arguments of
// one call) its answer or the error the client raised (name, message, HTTP status and body).
import { InferenceClient } from "@huggingface/inference";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const { url, key, texts, cases } = JSON.parse(Buffer.concat(chunks).toString("utf8"));
// retry_on_error: false, or the client resends a 503 (no worker free) at once, without end.
const client = new InferenceClient(key, { endpointUrl: url });
const options = { retry_on_error: false };

async function outcome(args) {
  try {
    return { answer: await client.tokenClassification(args, options) };
  } catch (err) {
    const response = err.httpResponse ?? {};
    return { error: { name: err.name, message: err.message, status: response.status ?? null, body: response.body ?? null } };
  }
}

const answers = [];
for (const text of texts) answers.push(await outcome({ inputs: text }));
const results = {};
for (const [name, args] of Object.entries(cases)) results[name] = await outcome(args);
process.stdout.write(JSON.stringify({ answers, cases: results }));
