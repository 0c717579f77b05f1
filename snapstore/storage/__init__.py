"""Storage: the files of a repository. Each module owns one kind of file."""
