package caddymodule

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"

	"github.com/zapgate/caddy-zapier/connect"
)

// A stored connection's path names its owner only by a keyed hash
// (storage_names.go). Connection webhooks name the connection, not the
// user, so the record also carries its owner sealed (AES-256-GCM under a
// key derived from the storage-name key, bound to the connection and app):
// the gateway can map a connection back to (tenant, user); storage alone
// does not tell who is connected.

// connectionOwner is who a stored connection belongs to.
type connectionOwner struct {
	tenant, user string
	rec          connectionRecord
}

type sealedOwner struct {
	Tenant string `json:"t"`
	User   string `json:"u"`
}

func ownerAEAD(keys connect.StateKeys) (cipher.AEAD, error) {
	m := hmac.New(sha256.New, keys.NamesKey())
	m.Write([]byte("caddy-zapier connection owner v1"))
	block, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func ownerAAD(rec *connectionRecord) []byte {
	return []byte(rec.ConnectionID + "\x00" + rec.AppUUID)
}

// sealOwner sets rec.Owner to (tenant, user), sealed.
func (s *connectionStore) sealOwner(ctx context.Context, rec *connectionRecord, tenant, user string) error {
	keys, err := s.keys.Keys(ctx)
	if err != nil {
		return err
	}
	aead, err := ownerAEAD(keys)
	if err != nil {
		return err
	}
	plain, _ := json.Marshal(sealedOwner{Tenant: tenant, User: user})
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	rec.Owner = base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, ownerAAD(rec)))
	return nil
}

func openOwner(aead cipher.AEAD, rec *connectionRecord) (tenant, user string, ok bool) {
	raw, err := base64.RawURLEncoding.DecodeString(rec.Owner)
	if err != nil || len(raw) < aead.NonceSize() {
		return "", "", false
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], ownerAAD(rec))
	if err != nil {
		return "", "", false
	}
	var o sealedOwner
	if json.Unmarshal(plain, &o) != nil {
		return "", "", false
	}
	return o.Tenant, o.User, true
}

// owner maps a Zapier connection id back to the stored connection and the
// (tenant, user) that stored it; nil when no record of this version names
// it (records stored before owners were sealed cannot be mapped).
func (s *connectionStore) owner(ctx context.Context, connID string) (*connectionOwner, error) {
	if connID == "" {
		return nil, nil
	}
	var found *connectionOwner
	err := s.eachOwned(ctx, func(o *connectionOwner) bool {
		if o.rec.ConnectionID == connID {
			found = o
			return false
		}
		return true
	}, func(rec *connectionRecord) bool { return rec.ConnectionID == connID })
	return found, err
}

// ownedBy returns every stored connection of a tenant's users, by their
// sealed owners (offboarding a tenant: storage names only hash identities).
func (s *connectionStore) ownedBy(ctx context.Context, tenant string) ([]connectionOwner, error) {
	var out []connectionOwner
	err := s.eachOwned(ctx, func(o *connectionOwner) bool {
		if o.tenant == tenant {
			out = append(out, *o)
		}
		return true
	}, nil)
	return out, err
}

// eachOwned calls fn with every stored record whose owner opens (and, when
// pre is given, that pre accepts before the owner is opened), until fn
// returns false.
func (s *connectionStore) eachOwned(ctx context.Context, fn func(*connectionOwner) bool, pre func(*connectionRecord) bool) error {
	keys, err := s.keys.Keys(ctx)
	if err != nil {
		return err
	}
	aead, err := ownerAEAD(keys)
	if err != nil {
		return err
	}
	paths, err := s.storage.List(ctx, connectionsPrefix, true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, p := range paths {
		data, err := s.storage.Load(ctx, p)
		if err != nil {
			continue
		}
		recs, err := decodeConnectionFile(data)
		if err != nil {
			continue
		}
		for _, rec := range recs {
			if rec.Owner == "" || (pre != nil && !pre(&rec)) {
				continue
			}
			if tenant, user, ok := openOwner(aead, &rec); ok {
				if !fn(&connectionOwner{tenant: tenant, user: user, rec: rec}) {
					return nil
				}
			}
		}
	}
	return nil
}

// public is the record as the partner sees it: without the sealed owner.
func (r connectionRecord) public() connectionRecord {
	r.Owner = ""
	if r.Status == "" {
		r.Status = connect.StatusOK
	}
	return r
}
