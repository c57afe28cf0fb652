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
