// Prints each .properties file given as Java's own Properties.load(InputStream) reads it, as
// TorchServe's ConfigManager does: one line per file, key<TAB>value pairs escaped as JSON strings.
// Run as a single-file program: java PropertiesDump.java a.properties b.properties
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;
import java.util.TreeMap;

public class PropertiesDump {
    static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') out.append('\\').append(c);
            else if (c < 0x20 || c > 0x7e) out.append(String.format("\\u%04x", (int) c));
            else out.append(c);
        }
        return out.append('"').toString();
    }

    public static void main(String[] args) throws Exception {
        for (String name : args) {
            Properties props = new Properties();
            try (InputStream in = Files.newInputStream(Path.of(name))) {
                props.load(in);
            }
            StringBuilder line = new StringBuilder("{");
            for (var e : new TreeMap<>(props).entrySet()) {
                if (line.length() > 1) line.append(", ");
                line.append(quote((String) e.getKey())).append(": ").append(quote((String) e.getValue()));
            }
            System.out.println(line.append('}'));
        }
    }
}
