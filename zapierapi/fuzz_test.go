package zapierapi

import (
	"testing"
	"time"
)

// FuzzParseTokenResponse: the parser never panics, a success always carries a
// usable token, and a failure is always a KindFailed *Error.
func FuzzParseTokenResponse(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzParseTokenResponse.
	f.Add([]byte(`{"access_token":"a","expires_in":60}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		const ttl = 5 * time.Minute
		tok, err := ParseTokenResponse(body, t0, ttl)
		if err != nil {
			if e, ok := AsError(err); !ok || e.Kind != KindFailed {
				t.Fatalf("error %v (%T) is not a KindFailed *Error", err, err)
			}
			if tok != (Token{}) {
				t.Fatal("non-zero token with an error")
			}
			return
		}
		if tok.AccessToken == "" || !visibleASCII(tok.AccessToken) {
			t.Fatalf("unusable access token %q", tok.AccessToken)
		}
		if tok.ExpiresIn <= 0 || tok.ExpiresIn > maxTTL {
			t.Fatalf("ExpiresIn = %v", tok.ExpiresIn)
		}
		if !tok.Expiry.Equal(t0.Add(tok.ExpiresIn)) {
			t.Fatalf("Expiry = %v, want now + %v", tok.Expiry, tok.ExpiresIn)
		}
	})
}
