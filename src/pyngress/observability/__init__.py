"""Reserved for later issues; see DEVELOPERS.md."""
