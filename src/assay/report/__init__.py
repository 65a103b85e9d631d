"""Report renderers: HTML, JSON, JUnit XML, Markdown; they read results only."""
