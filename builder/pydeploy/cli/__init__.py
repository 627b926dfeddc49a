"""The command line: thin click commands; the only package that prints."""
