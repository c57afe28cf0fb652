package jwks

import (
	"slices"
	"testing"
	"time"
)

// FuzzDecodeDocument: a stored key document never panics the decoder; what
// it accepts is a non-empty set, sorted by activation, without duplicate
// or revoked kids, each kid the thumbprint of its key.
func FuzzDecodeDocument(f *testing.F) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	k, err := generateKey("ES256", now, now)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := encodeDocument([]*signingKey{k}, nil)
	revoked, _ := encodeDocument([]*signingKey{k}, []revokedKey{{KID: k.kid, RevokedAt: now}})
	for _, s := range [][]byte{good, revoked, []byte(`{"version":1,"keys":[]}`), []byte(`{"version":2}`),
		[]byte(`{"version":1,"keys":[{"kid":"x","alg":"ES256","activates_at":"2026-01-01T00:00:00Z","private_key":"AAAA"}]}`),
		[]byte(`{"version":1,"keys":[],"revoked":[{"kid":""}]}`), []byte(`null`)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, rev, err := decodeDocument(data, map[string]*signingKey{k.kid: k})
		if err != nil {
			return
		}
		if len(keys) == 0 {
			t.Fatal("accepted a document without keys")
		}
		seen := map[string]bool{}
		for i, key := range keys {
			if seen[key.kid] || slices.ContainsFunc(rev, func(r revokedKey) bool { return r.KID == key.kid }) {
				t.Fatalf("kid %q duplicated or revoked", key.kid)
			}
			seen[key.kid] = true
			if i > 0 && key.activatesAt.Before(keys[i-1].activatesAt) {
				t.Fatal("keys not sorted by activation")
			}
			if key.kid != key.jwk.Kid {
				t.Fatalf("kid %q does not match its JWK %q", key.kid, key.jwk.Kid)
			}
		}
	})
}
