package jwks

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"
)

func BenchmarkMintES256(b *testing.B) {
	m := loaded(b, NewMemoryStorage(), newClock(), Config{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Mint("org_456", "user_123"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMintES256Parallel(b *testing.B) {
	m := loaded(b, NewMemoryStorage(), newClock(), Config{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Mint("org_456", "user_123"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSignES256Raw is the floor for BenchmarkMintES256: SHA-256 and an
// ECDSA signature over the same signing input with the same key, nothing else.
func BenchmarkSignES256Raw(b *testing.B) {
	m := loaded(b, NewMemoryStorage(), newClock(), Config{})
	tok, err := m.Mint("org_456", "user_123")
	if err != nil {
		b.Fatal(err)
	}
	input := []byte(tok[:strings.LastIndexByte(tok, '.')])
	key := m.set.Load().keys[0].priv.(*ecdsa.PrivateKey)
	b.ReportAllocs()
	for b.Loop() {
		digest := sha256.Sum256(input)
		if _, _, err := ecdsa.Sign(rand.Reader, key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}
