package integration

import (
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawIdentityForms are the ways an id can sit in storage reversibly: as
// is, hex, base64 (standard and URL, padded or not) and base32 (standard,
// and the extended-hex lower-case alphabet older storage paths used),
// compared case-insensitively.
func rawIdentityForms(id string) []string {
	b := []byte(id)
	forms := []string{id, hex.EncodeToString(b),
		base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
		base32.StdEncoding.EncodeToString(b), base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b),
		base32.HexEncoding.EncodeToString(b), base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b)}
	for i, f := range forms {
		forms[i] = strings.ToLower(f)
	}
	return forms
}

// assertNoRawIdentity walks a file storage root and fails for every path
// or file that holds one of ids in clear or in a reversible encoding. Use
// ids long and distinctive enough that their encodings cannot turn up by
// chance (not "org" or "a").
func assertNoRawIdentity(t *testing.T, dir string, ids ...string) {
	t.Helper()
	type form struct{ id, enc string }
	var forms []form
	for _, id := range ids {
		for _, f := range rawIdentityForms(id) {
			forms = append(forms, form{id, f})
		}
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hay := strings.ToLower(filepath.ToSlash(rel))
		if !d.IsDir() {
			data, err := os.ReadFile(p)
			if err != nil && !os.IsNotExist(err) { // a lock file may go meanwhile
				return err
			}
			hay += "\n" + strings.ToLower(string(data))
		}
		for _, f := range forms {
			if strings.Contains(hay, f.enc) {
				t.Errorf("storage %s holds %q (as %q)", rel, f.id, f.enc)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking the storage: %v", err)
	}
}
