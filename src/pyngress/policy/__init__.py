"""Rate limits, access lists, redirects, header rules (issue 5). Pure: `now` is passed in."""
