"""The commands: ``python scripts/<command>.py`` parses its flags and makes one call into the
library module of the same name (serving/, drills/, bench/, study/ or web/). A package, so
that the tests can call ``main(argv)`` in-process."""
