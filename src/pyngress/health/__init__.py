"""Health state machines: active checks, passive ejection (issue 7). Pure."""
