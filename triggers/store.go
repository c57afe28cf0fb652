package triggers

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Storage is the core's storage interface (a subset of certmagic.Storage),
// so Caddy's storage (file system, Redis, …) plugs in as is and sidecars
// sharing it share subscriptions, dead letters and drain locks.
type Storage = gateway.Storage

// Storage layout.
const (
	// subsPrefix holds subscriptions at /<identity name>/<name part>: the
	// identity's keyed name (gateway.Namespace), never its value; records
	// of older versions at /<tenant part>/<user part>/<name part> are
	// migrated when read (atrest.go).
	subsPrefix  = "zapier/triggers/subscriptions"
	deadPrefix  = "zapier/triggers/dead-letters" // /<message id part>
	locksPrefix = "zapier/triggers/drain"        // storage lock names
	// drainLeasePrefix holds the drain locks' lease records (drainlock.go).
	drainLeasePrefix = "zapier/triggers/drain-leases" // /<hashed subscription key>
)

var keyPartEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// keyPart encodes an id that is not an identity (a subscription name, a
// message id) as one safe storage key part: "b" + base32, or "h" + sha256
// when long. Identities are named by gateway.Namespace instead.
func keyPart(id string) string {
	if enc := keyPartEncoding.EncodeToString([]byte(id)); len(enc) < 100 {
		return "b" + enc
	}
	sum := sha256.Sum256([]byte(id))
	return "h" + hex.EncodeToString(sum[:])
}

// Record is a subscription as stored.
type Record struct {
	// Tenant and User are the owner, in memory and in answers; at rest the
	// record holds them sealed (storedRecord).
	Tenant       string          `json:"tenant,omitempty"`
	User         string          `json:"user,omitempty"`
	Name         string          `json:"name"`
	App          string          `json:"app"`     // Zapier's app key (Connect implementation id)
	Trigger      string          `json:"trigger"` // the trigger's action key
	Inputs       json.RawMessage `json:"inputs"`
	ConnectionID string          `json:"connection_id,omitempty"`
	InboxID      string          `json:"inbox_id"`
	InboxKey     string          `json:"inbox_key"`
	// Status is active or paused; PausedBy is "user" when paused through
	// the gateway, "zapier" when Zapier paused it (PausedReason says why).
	Status       string    `json:"status"`
	PausedReason string    `json:"paused_reason,omitempty"`
	PausedBy     string    `json:"paused_by,omitempty"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
}

// Identity of the record's user.
func (r *Record) Identity() Identity { return Identity{Tenant: r.Tenant, User: r.User} }

// legacySubKey is where versions before keyed names kept a subscription:
// the tenant and user reversibly encoded in the path.
func legacySubKey(id Identity, name string) string {
	return path.Join(subsPrefix, keyPart(id.Tenant), keyPart(id.User), keyPart(name))
}

func loadJSON[T any](ctx context.Context, s Storage, key string) (*T, error) {
	data, err := s.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", path.Dir(key), err)
	}
	v := new(T)
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path.Dir(key), err)
	}
	return v, nil
}

func storeJSON(ctx context.Context, s Storage, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.Store(ctx, key, data)
}

// DeadLetter is a message the partner never accepted: the exact body
// delivered, under its webhook-id, replayable.
type DeadLetter struct {
	ID string `json:"id"` // Zapier's message id = webhook-id
	// Tenant, User and Body are held sealed at rest (storedDeadLetter).
	Tenant       string          `json:"tenant"`
	User         string          `json:"user"`
	Subscription string          `json:"subscription"`
	Body         json.RawMessage `json:"body"`
	Attempts     int             `json:"attempts"`
	LastError    string          `json:"last_error"`
	Created      time.Time       `json:"created"`
}

func deadKey(msgID string) string { return path.Join(deadPrefix, keyPart(msgID)) }

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
