package connect

import (
	"strings"
	"testing"
)

// FuzzStorageKeyPart: every id gives one safe key part, and two ids never
// share one (injectivity).
func FuzzStorageKeyPart(f *testing.F) {
	f.Add("a", "b")
	f.Add("..", "/")
	f.Add(strings.Repeat("x", 61), strings.Repeat("x", 62))
	f.Add("Alice", "alice")
	f.Fuzz(func(t *testing.T, a, b string) {
		pa, pb := StorageKeyPart(a), StorageKeyPart(b)
		for _, p := range []string{pa, pb} {
			if !IsKeyPart(p) || len(p) > MaxKeyPart || strings.ContainsAny(p, "/\\.") {
				t.Fatalf("unsafe key part %q", p)
			}
		}
		if (a == b) != (pa == pb) {
			t.Fatalf("%q and %q: key parts %q and %q", a, b, pa, pb)
		}
	})
}

func TestStorageKeyPartIsSafeAndInjective(t *testing.T) {
	seen := map[string]string{}
	for _, id := range awkwardIDs {
		part := StorageKeyPart(id)
		if !IsKeyPart(part) || len(part) > MaxKeyPart || part == "." || part == ".." {
			t.Errorf("StorageKeyPart(%.20q) = %q is not a safe key part", id, part)
		}
		if strings.ContainsAny(part, "/\\.") || part != strings.ToLower(part) {
			t.Errorf("StorageKeyPart(%.20q) = %q", id, part)
		}
		if prev, dup := seen[part]; dup {
			t.Errorf("%.20q and %.20q share the key part %q", prev, id, part)
		}
		seen[part] = id
	}
	if StorageKeyPart(strings.Repeat("é", 5000)) == StorageKeyPart(strings.Repeat("é", 5000)+"x") {
		t.Error("long ids that differ share a key")
	}
}
