package triggers

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
)

// At rest, nothing names a user in clear or in a reversible encoding:
// subscriptions live under the identity's keyed name
// (gateway.Namespace.Name), and every record that must be mapped back to
// its owner (a subscription, to call Zapier with the user's token; a dead
// letter, to replay or forget it) carries the owner sealed
// (gateway.Namespace.SealOwner), bound to the record. A dead letter's body,
// the exact event delivered, names the user too, so it is sealed as well.
// Records of older versions (owner in clear, reversible paths) are migrated
// when read: by every lookup and by the background reload.

func gwID(id Identity) gateway.Identity { return gateway.Identity{Tenant: id.Tenant, User: id.User} }

// subKey is the subscription's storage key.
func (m *Manager) subKey(ctx context.Context, id Identity, name string) (string, error) {
	prefix, err := m.userSubsPrefix(ctx, id)
	if err != nil {
		return "", err
	}
	return path.Join(prefix, keyPart(name)), nil
}

// userSubsPrefix is where the user's subscriptions are.
func (m *Manager) userSubsPrefix(ctx context.Context, id Identity) (string, error) {
	n, err := m.ns.Name(ctx, gwID(id))
	if err != nil {
		return "", fmt.Errorf("naming the user's subscriptions: %w", err)
	}
	return path.Join(subsPrefix, n), nil
}

// storedRecord is a subscription at rest: the owner sealed, Tenant and
// User empty. A record with Tenant or User set and no Owner is of an older
// version.
type storedRecord struct {
	Owner string `json:"owner,omitempty"`
	Record
}

// subAAD binds a sealed owner to the subscription's place (identity name
// and subscription name), so it cannot be moved to another record.
func subAAD(key string) []byte {
	return []byte("trigger subscription\x00" + strings.TrimPrefix(key, subsPrefix+"/"))
}

// putSub stores rec at key, its owner sealed.
func (m *Manager) putSub(ctx context.Context, key string, rec Record) error {
	sealed, err := m.ns.SealOwner(ctx, gwID(rec.Identity()), subAAD(key))
	if err != nil {
		return fmt.Errorf("sealing the subscription's owner: %w", err)
	}
	sr := storedRecord{Owner: sealed, Record: rec}
	sr.Tenant, sr.User = "", ""
	return storeJSON(ctx, m.cfg.Storage, key, sr)
}

// errUnreadable is a record that is neither of this version nor of an
// older one (or sealed under another names key).
var errUnreadable = errors.New("triggers: an unreadable record")

// readSub loads the subscription at key (nil when there is none). A record
// of an older version is moved to its keyed place first; the key returned
// is where the record is now.
func (m *Manager) readSub(ctx context.Context, key string) (string, *Record, error) {
	sr, err := loadJSON[storedRecord](ctx, m.cfg.Storage, key)
	if err != nil || sr == nil {
		return key, nil, err
	}
	rec := sr.Record
	if sr.Owner != "" {
		id, err := m.ns.OpenOwner(ctx, sr.Owner, subAAD(key))
		if err != nil {
			return key, nil, fmt.Errorf("%w: subscription %s: %v", errUnreadable, path.Base(key), err)
		}
		rec.Tenant, rec.User = id.Tenant, id.User
		return key, &rec, nil
	}
	if rec.Tenant == "" || rec.User == "" || !validName.MatchString(rec.Name) {
		return key, nil, fmt.Errorf("%w: subscription %s", errUnreadable, path.Base(key))
	}
	return m.migrateSub(ctx, key, rec)
}

// migrateSub moves an older version's record (owner in clear, at a path
// that encodes it) to its keyed place with the owner sealed. A record
// another gateway moved first wins.
func (m *Manager) migrateSub(ctx context.Context, oldKey string, rec Record) (string, *Record, error) {
	newKey, err := m.subKey(ctx, rec.Identity(), rec.Name)
	if err != nil {
		return oldKey, nil, err
	}
	if newKey == oldKey {
		return oldKey, nil, fmt.Errorf("%w: subscription %s", errUnreadable, path.Base(oldKey))
	}
	cur, err := loadJSON[storedRecord](ctx, m.cfg.Storage, newKey)
	if err != nil {
		return oldKey, nil, err
	}
	if cur == nil {
		if err := m.putSub(ctx, newKey, rec); err != nil {
			return oldKey, nil, fmt.Errorf("migrating a subscription: %w", err)
		}
	}
	if err := m.cfg.Storage.Delete(ctx, oldKey); err != nil {
		return oldKey, nil, fmt.Errorf("migrating a subscription: %w", err)
	}
	if cur != nil {
		_, r, err := m.readSub(ctx, newKey)
		return newKey, r, err
	}
	return newKey, &rec, nil
}

// listSubs reads every subscription under prefix, migrating older ones;
// the map is by storage key. Unreadable records are skipped (and counted).
func (m *Manager) listSubs(ctx context.Context, prefix string) (map[string]Record, int, error) {
	keys, err := m.cfg.Storage.List(ctx, prefix, true)
	if isNotExist(err) {
		return map[string]Record{}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string]Record, len(keys))
	bad := 0
	for _, k := range keys {
		key, rec, err := m.readSub(ctx, k)
		if errors.Is(err, errUnreadable) {
			bad++
			continue
		}
		if err != nil || rec == nil {
			continue // a directory, a temporary file, or deleted meanwhile
		}
		out[key] = *rec
	}
	return out, bad, nil
}

// userSubs reads the user's subscriptions, including those an older
// version stored (migrated on the way).
func (m *Manager) userSubs(ctx context.Context, id Identity) (map[string]Record, error) {
	legacy := path.Dir(legacySubKey(id, "x"))
	if keys, err := m.cfg.Storage.List(ctx, legacy, true); err == nil && len(keys) > 0 {
		if _, _, err := m.listSubs(ctx, legacy); err != nil {
			return nil, err
		}
	}
	prefix, err := m.userSubsPrefix(ctx, id)
	if err != nil {
		return nil, err
	}
	subs, _, err := m.listSubs(ctx, prefix)
	return subs, err
}

// storedDeadLetter is a dead letter at rest: owner and body sealed. Tenant,
// User and Body are set only in records of older versions.
type storedDeadLetter struct {
	ID           string    `json:"id"`
	Owner        string    `json:"owner,omitempty"`
	Subscription string    `json:"subscription,omitempty"`
	SealedBody   string    `json:"sealed_body,omitempty"`
	Attempts     int       `json:"attempts"`
	LastError    string    `json:"last_error"`
	Created      time.Time `json:"created"`

	Tenant string          `json:"tenant,omitempty"`
	User   string          `json:"user,omitempty"`
	Body   json.RawMessage `json:"body,omitempty"`
}

func deadAAD(id string) []byte { return []byte("trigger dead letter\x00" + id) }

// bodyLabel derives the key that seals dead letters' bodies from the names
// key, apart from the owner-sealing key.
const bodyLabel = "caddy-zapier trigger dead letter body v1"

// putDead stores a dead letter, owner and body sealed.
func (m *Manager) putDead(ctx context.Context, dl DeadLetter) error {
	owner, err := m.ns.SealOwner(ctx, gateway.Identity{Tenant: dl.Tenant, User: dl.User}, deadAAD(dl.ID))
	if err != nil {
		return err
	}
	sealed, err := m.ns.Seal(ctx, bodyLabel, dl.Body, deadAAD(dl.ID))
	if err != nil {
		return err
	}
	return storeJSON(ctx, m.cfg.Storage, deadKey(dl.ID), storedDeadLetter{ID: dl.ID, Owner: owner, Subscription: dl.Subscription,
		SealedBody: sealed, Attempts: dl.Attempts, LastError: dl.LastError, Created: dl.Created})
}

// readDead loads the dead letter at key (nil when there is none), opening
// owner and body; one of an older version is sealed in place.
func (m *Manager) readDead(ctx context.Context, key string) (*DeadLetter, error) {
	sd, err := loadJSON[storedDeadLetter](ctx, m.cfg.Storage, key)
	if err != nil || sd == nil {
		return nil, err
	}
	if sd.ID == "" || deadKey(sd.ID) != key {
		return nil, fmt.Errorf("%w: dead letter %s", errUnreadable, path.Base(key))
	}
	dl := &DeadLetter{ID: sd.ID, Subscription: sd.Subscription, Attempts: sd.Attempts, LastError: sd.LastError, Created: sd.Created}
	if sd.Owner == "" {
		// An older version's: owner and body in clear. Seal it in place.
		dl.Tenant, dl.User, dl.Body = sd.Tenant, sd.User, sd.Body
		if err := m.putDead(ctx, *dl); err != nil {
			return nil, fmt.Errorf("migrating a dead letter: %w", err)
		}
		return dl, nil
	}
	id, err := m.ns.OpenOwner(ctx, sd.Owner, deadAAD(sd.ID))
	if err != nil {
		return nil, fmt.Errorf("%w: dead letter %s: %v", errUnreadable, path.Base(key), err)
	}
	body, err := m.ns.Open(ctx, bodyLabel, sd.SealedBody, deadAAD(sd.ID))
	if errors.Is(err, gateway.ErrSealed) {
		return nil, fmt.Errorf("%w: dead letter %s", errUnreadable, path.Base(key))
	}
	if err != nil {
		return nil, err
	}
	dl.Tenant, dl.User, dl.Body = id.Tenant, id.User, body
	return dl, nil
}

// listDead reads every dead letter (migrating older ones), by storage key.
func (m *Manager) listDead(ctx context.Context) (map[string]DeadLetter, error) {
	keys, err := m.cfg.Storage.List(ctx, deadPrefix, true)
	if isNotExist(err) {
		return map[string]DeadLetter{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]DeadLetter, len(keys))
	for _, k := range keys {
		dl, err := m.readDead(ctx, k)
		if err != nil || dl == nil {
			continue
		}
		out[k] = *dl
	}
	return out, nil
}

// inboxKey is the inbox key at Zapier for (user, name): unique per user
// (and per tenant, in case Zapier's user is the JWT's sub alone), keyed so
// that neither Zapier nor the storage can tell the user from it.
func (m *Manager) inboxKey(ctx context.Context, id Identity, name string) (string, error) {
	sum, err := m.ns.Subject(ctx, gwID(id))
	if err != nil {
		return "", err
	}
	return "czg-" + hex.EncodeToString(sum[:8]) + "-" + name, nil
}
