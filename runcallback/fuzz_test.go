package runcallback

import (
	"context"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerifyHeader feeds arbitrary Zapier-Callback-Signature values to the
// verifier: it never panics, an error never quotes the token, and a token
// it accepts has a subject (RequireSubject) that binds exactly one run.
func FuzzVerifyHeader(f *testing.F) {
	fx := newFixture(f, VerifierConfig{RequireSubject: true})
	valid := sign(f, jwt.SigningMethodES256, ecKey256, "ec-256", fx.claims())
	noSub := fx.claims()
	delete(noSub, "sub")
	for _, seed := range []string{
		valid,
		" " + valid + " ",
		sign(f, jwt.SigningMethodES256, ecKey256, "ec-256", noSub),
		sign(f, jwt.SigningMethodES256, ecKey256, "no-such-kid", fx.claims()),
		"eyJhbGciOiJub25lIn0.e30.",
		"a.b.c", "", ".", "..", "Bearer " + valid,
		strings.Repeat("A", 9000),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		claims, err := fx.v.Verify(context.Background(), header)
		if err != nil {
			if len(header) > 16 && strings.Contains(err.Error(), strings.TrimSpace(header)) {
				t.Fatalf("the error quotes the token: %v", err)
			}
			return
		}
		if claims.Subject == "" || !BindsRun(claims, claims.Subject) || BindsRun(claims, claims.Subject+"x") {
			t.Fatalf("accepted claims do not bind one run: %+v", claims)
		}
	})
}
