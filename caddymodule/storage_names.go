package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	"github.com/zapgate/caddy-zapier/tokencache"
)

// Storage names of identities. Run records name their owner, as connection
// records do (connect.Store), by an HMAC of (tenant, user) under a key
// derived from the connect state key in storage (zapier/connect-state.key;
// connect.StateKeeper.IdentityHMAC), so every gateway sharing the storage
// computes the same names, and reading the storage without that key does
// not tell who ran what.
//
// Before keyed names, run owners were an unkeyed SHA-256. That old owner
// hash is still accepted (run records expire after Zapier's 7-day
// retention anyway).

// runOwner is the owner of a run record: "k:" and the identity's keyed hash.
func runOwner(ctx context.Context, keys *stateKeeper, key tokencache.Key) (string, error) {
	sum, err := keys.IdentityHMAC(ctx, key.Tenant, key.User)
	if err != nil {
		return "", err
	}
	return "k:" + hex.EncodeToString(sum), nil
}

// legacyOwnerHash is the unkeyed owner hash of run records written before
// keyed names. Identity values have no control characters, so the NUL
// separator keeps the pair unambiguous.
func legacyOwnerHash(key tokencache.Key) string {
	sum := sha256.Sum256([]byte(key.Tenant + "\x00" + key.User))
	return hex.EncodeToString(sum[:])
}
