"""Small built-in data sets that need no download."""
