"""Operations: commit, checkout, remove, stats (and later gc, prune, verify), written against
:class:`snapstore.repo.Repository`."""
