"""Storage: the files of a repository, or its objects in a backend. Each module owns one kind
of file; each kind has a local class and an object class with the same methods (kinds.py)."""
