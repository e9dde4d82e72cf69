"""The build hook (hooks.py's class) and what it renders: runtime folder, models, stubs, editable loader."""
