# Prints what each failed test said (its own t.Log/t.Error lines, not the
# Caddy or fake Zapier logs around them) from a `go test -v` log, so a CI
# failure explains itself in the few lines CI shows.
/^=== (RUN|CONT|PAUSE) / { test = $3; next }
/^ *--- FAIL: / { failed[$3] = 1; order[++n] = $3; next }
/^ +[A-Za-z0-9_]+_test\.go:[0-9]+: / { said[test] = said[test] $0 "\n" }
/^panic: / { panicked = 1 }
panicked { print }
END {
	for (i = 1; i <= n; i++) {
		name = order[i]
		printf "--- FAIL: %s\n%s", name, said[name]
	}
}
