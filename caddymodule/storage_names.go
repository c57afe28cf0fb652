package caddymodule

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/tokencache"
)

// Storage names of identities. Connection records and run records name
// their owner by an HMAC of (tenant, user) under a key derived from the
// connect state key in storage (zapier/connect-state.key), so every gateway
// sharing the storage computes the same names, and reading the storage
// without that key does not tell who is connected or who ran what.
//
// Before keyed names, connection paths were the reversible connect.StorageKeyPart
// of tenant and user and run owners an unkeyed SHA-256. Those records stay
// readable: a connection found under its old path is moved to the new one,
// and a run record's old owner hash is still accepted (run records expire
// after Zapier's 7-day retention anyway).

// identityHMAC is the keyed hash of an identity. Identity values cannot
// contain NUL, so the join is unambiguous.
func identityHMAC(ctx context.Context, keys *stateKeeper, tenant, user string) ([]byte, error) {
	k, err := keys.Keys(ctx)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, k.NamesKey())
	m.Write([]byte(tenant))
	m.Write([]byte{0})
	m.Write([]byte(user))
	return m.Sum(nil), nil
}

// identityStorageName is the identity's storage key part: "k" and 64
// lower-case hex digits, apart from connect.StorageKeyPart's "b"/"h" forms.
func identityStorageName(ctx context.Context, keys *stateKeeper, tenant, user string) (string, error) {
	sum, err := identityHMAC(ctx, keys, tenant, user)
	if err != nil {
		return "", err
	}
	return "k" + hex.EncodeToString(sum), nil
}

func legacyUserPrefix(tenant, user string) string {
	return path.Join(connectionsPrefix, connect.StorageKeyPart(tenant), connect.StorageKeyPart(user))
}

func legacyConnectionKey(tenant, user, appUUID string) string {
	return path.Join(legacyUserPrefix(tenant, user), connect.StorageKeyPart(appUUID))
}

// migrate moves a record from its legacy key to key, unless key already has
// one (the newer wins and the legacy one is dropped). It returns the moved
// record, or nil when there was none.
func (s *connectionStore) migrate(ctx context.Context, legacy, key string) (*connectionRecord, error) {
	data, err := s.storage.Load(ctx, legacy)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading connection: %w", err)
	}
	rec := new(connectionRecord)
	if err := json.Unmarshal(data, rec); err != nil {
		return nil, fmt.Errorf("decoding stored connection: %w", err)
	}
	if !s.storage.Exists(ctx, key) {
		if err := s.storage.Store(ctx, key, data); err != nil {
			return nil, fmt.Errorf("moving connection: %w", err)
		}
	}
	if err := s.storage.Delete(ctx, legacy); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("moving connection: %w", err)
	}
	return rec, nil
}

// migrateAll moves every record under a legacy user prefix to prefix, and
// the emptied directory away.
func (s *connectionStore) migrateAll(ctx context.Context, legacyPrefix, prefix string) error {
	keys, err := s.storage.List(ctx, legacyPrefix, false)
	if errors.Is(err, fs.ErrNotExist) || len(keys) == 0 && err == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing connections: %w", err)
	}
	for _, k := range keys {
		if !connect.IsKeyPart(path.Base(k)) {
			continue
		}
		if _, err := s.migrate(ctx, k, path.Join(prefix, path.Base(k))); err != nil {
			return err
		}
	}
	_ = s.storage.Delete(ctx, legacyPrefix) // now empty; a leftover is harmless
	return nil
}

// runOwner is the owner of a run record: "k:" and the identity's keyed hash.
func runOwner(ctx context.Context, keys *stateKeeper, key tokencache.Key) (string, error) {
	sum, err := identityHMAC(ctx, keys, key.Tenant, key.User)
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
