package jwks

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// payloadOf decodes a compact JWT's payload (the signature is checked by
// verify).
func payloadOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	raw, err := b64.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatalf("payload %s: %v", raw, err)
	}
	return claims
}

// TestMintWithAppendsExtraClaims: MintWith adds the given members to a
// payload that still verifies; Mint (and MintWith nil) adds none.
func TestMintWithAppendsExtraClaims(t *testing.T) {
	clock := newClock()
	m := loaded(t, NewMemoryStorage(), clock, Config{})
	body, _ := m.JWKS()
	w := want{alg: "ES256", userClaim: "sub", tenantClaim: "org_id", user: "u1", tenant: "t1", ttl: 5 * time.Minute, now: clock.Now()}

	extra := []byte(`,"billing":"{\"is_billable\":true}","rate_limit":{"exempt":true}`)
	tok, err := m.MintWith("t1", "u1", extra)
	if err != nil {
		t.Fatal(err)
	}
	withExtra := w
	withExtra.extra = 2
	verify(t, body, tok, withExtra)
	claims := payloadOf(t, tok)
	if claims["billing"] != `{"is_billable":true}` {
		t.Errorf("billing = %#v", claims["billing"])
	}
	if rl, _ := claims["rate_limit"].(map[string]any); rl["exempt"] != true {
		t.Errorf("rate_limit = %#v", claims["rate_limit"])
	}

	for _, mint := range []func() (string, error){
		func() (string, error) { return m.Mint("t1", "u1") },
		func() (string, error) { return m.MintWith("t1", "u1", nil) },
	} {
		tok, err := mint()
		if err != nil {
			t.Fatal(err)
		}
		verify(t, body, tok, w)
		claims := payloadOf(t, tok)
		if _, ok := claims["billing"]; ok {
			t.Errorf("plain mint carries billing: %v", claims)
		}
		if _, ok := claims["rate_limit"]; ok {
			t.Errorf("plain mint carries rate_limit: %v", claims)
		}
	}
}
