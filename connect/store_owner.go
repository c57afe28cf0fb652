package connect

import (
	"context"
	"crypto/cipher"
	"errors"
	"io/fs"

	"github.com/zapgate/caddy-zapier/gateway"
)

// A stored connection's path names its owner only by a keyed hash
// (store.go). Connection webhooks name the connection, not the
// user, so the record also carries its owner sealed (AES-256-GCM under a
// key derived from the storage-name key, bound to the connection and app):
// the gateway can map a connection back to (tenant, user); storage alone
// does not tell who is connected.

// OwnedRecord is a stored connection and who it belongs to.
type OwnedRecord struct {
	Tenant, User string
	Record       Record
}

// OwnerAEAD seals owners into records; it is derived from the storage-name
// key, so it is the same on every gateway sharing the storage. Other
// records that must name identities only sealed (the forget log) use it
// with their own additional data.
func OwnerAEAD(keys StateKeys) (cipher.AEAD, error) { return gateway.OwnerAEAD(keys.NamesKey()) }

func ownerAAD(rec *Record) []byte {
	return []byte(rec.ConnectionID + "\x00" + rec.AppUUID)
}

// sealOwner sets rec.Owner to (tenant, user), sealed.
func (s *Store) sealOwner(ctx context.Context, rec *Record, tenant, user string) error {
	keys, err := s.keys.Keys(ctx)
	if err != nil {
		return err
	}
	aead, err := OwnerAEAD(keys)
	if err != nil {
		return err
	}
	rec.Owner, err = gateway.SealOwnerWith(aead, gateway.Identity{Tenant: tenant, User: user}, ownerAAD(rec))
	return err
}

func openOwner(aead cipher.AEAD, rec *Record) (tenant, user string, ok bool) {
	id, ok := gateway.OpenOwnerWith(aead, rec.Owner, ownerAAD(rec))
	return id.Tenant, id.User, ok
}

// Owner maps a Zapier connection id back to the stored connection and the
// (tenant, user) that stored it; nil when no record of this version names
// it (records stored before owners were sealed cannot be mapped).
func (s *Store) Owner(ctx context.Context, connID string) (*OwnedRecord, error) {
	if connID == "" {
		return nil, nil
	}
	var found *OwnedRecord
	err := s.EachOwned(ctx, func(o *OwnedRecord) bool {
		if o.Record.ConnectionID == connID {
			found = o
			return false
		}
		return true
	}, func(rec *Record) bool { return rec.ConnectionID == connID })
	return found, err
}

// OwnedBy returns every stored connection of a tenant's users, by their
// sealed owners (offboarding a tenant: storage names only hash identities).
func (s *Store) OwnedBy(ctx context.Context, tenant string) ([]OwnedRecord, error) {
	var out []OwnedRecord
	err := s.EachOwned(ctx, func(o *OwnedRecord) bool {
		if o.Tenant == tenant {
			out = append(out, *o)
		}
		return true
	}, nil)
	return out, err
}

// EachOwned calls fn with every stored record whose owner opens (and, when
// pre is given, that pre accepts before the owner is opened), until fn
// returns false.
func (s *Store) EachOwned(ctx context.Context, fn func(*OwnedRecord) bool, pre func(*Record) bool) error {
	keys, err := s.keys.Keys(ctx)
	if err != nil {
		return err
	}
	aead, err := OwnerAEAD(keys)
	if err != nil {
		return err
	}
	paths, err := s.storage.List(ctx, ConnectionsPrefix, true)
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
				if !fn(&OwnedRecord{Tenant: tenant, User: user, Record: rec}) {
					return nil
				}
			}
		}
	}
	return nil
}

// Public is the record as the partner sees it: without the sealed owner.
func (r Record) Public() Record {
	r.Owner = ""
	if r.Status == "" {
		r.Status = StatusOK
	}
	return r
}
