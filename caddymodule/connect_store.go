package caddymodule

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
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// connectionsPrefix is where stored connections live in Caddy storage:
// zapier/connections/k<keyed hash of tenant and user>/<app UUID encoded by
// storageKeyPart> (storage_names.go). Records written before the keyed
// names, under <tenant>/<user> encoded by storageKeyPart, are moved there
// when read.
const connectionsPrefix = "zapier/connections"

// maxKeyPart is the longest encoded key part; longer ids are hashed so that
// every part stays a valid file name on every storage backend.
const maxKeyPart = 100

// keyPartEncoding is lower-case base32 (hex alphabet, no padding): only
// [0-9a-v], so parts are the same on case-insensitive file systems and can
// never be "." or "..", or contain "/".
var keyPartEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// storageKeyPart encodes an arbitrary id (slashes, "..", unicode, kilobytes)
// as one safe storage key part. The "b" and "h" prefixes keep the plain and
// hashed forms apart, so the encoding stays injective.
func storageKeyPart(id string) string {
	if enc := keyPartEncoding.EncodeToString([]byte(id)); len(enc) < maxKeyPart {
		return "b" + enc
	}
	sum := sha256.Sum256([]byte(id))
	return "h" + hex.EncodeToString(sum[:])
}

// isKeyPart reports whether name is an output of storageKeyPart.
func isKeyPart(name string) bool {
	if len(name) < 1 || (name[0] != 'b' && name[0] != 'h') {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'v') {
			return false
		}
	}
	return true
}

// connectionRecord is what the gateway remembers about a user's connection
// to one app.
type connectionRecord struct {
	// ConnectionID is Zapier's authentication id (always a string).
	ConnectionID string `json:"connection_id"`
	// App is Connect's implementation id (e.g. SlackCLIAPI), AppUUID the
	// API's app id.
	App          string    `json:"app"`
	AppUUID      string    `json:"app_uuid"`
	Title        string    `json:"title,omitempty"`
	Created      time.Time `json:"created"`
	LastVerified time.Time `json:"last_verified"`
	// Owner is (tenant, user), sealed (connect_owner.go): connection
	// webhooks name only the connection.
	Owner string `json:"owner,omitempty"`
}

// connectionStore keeps one record per (tenant, user, app) in Caddy
// storage, so every gateway sharing the storage sees the same connections.
type connectionStore struct {
	storage certmagic.Storage
	now     func() time.Time
	keys    *stateKeeper // the storage-name key, shared through storage
}

func newConnectionStore(s certmagic.Storage) *connectionStore {
	return &connectionStore{storage: s, now: time.Now, keys: newStateKeeper(context.Background(), s, 0)}
}

// userPrefix is where the identity's records live: a keyed hash, so the
// storage does not say who is connected.
func (s *connectionStore) userPrefix(ctx context.Context, tenant, user string) (string, error) {
	name, err := identityStorageName(ctx, s.keys, tenant, user)
	if err != nil {
		return "", err
	}
	return path.Join(connectionsPrefix, name), nil
}

func (s *connectionStore) connectionKey(ctx context.Context, tenant, user, appUUID string) (string, error) {
	prefix, err := s.userPrefix(ctx, tenant, user)
	if err != nil {
		return "", err
	}
	return path.Join(prefix, storageKeyPart(appUUID)), nil
}

// get returns the caller's record for the app, or nil when there is none.
func (s *connectionStore) get(ctx context.Context, tenant, user, appUUID string) (*connectionRecord, error) {
	key, err := s.connectionKey(ctx, tenant, user, appUUID)
	if err != nil {
		return nil, err
	}
	data, err := s.storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return s.migrate(ctx, legacyConnectionKey(tenant, user, appUUID), key)
	}
	if err != nil {
		return nil, fmt.Errorf("loading connection: %w", err)
	}
	rec := new(connectionRecord)
	if err := json.Unmarshal(data, rec); err != nil {
		return nil, fmt.Errorf("decoding stored connection: %w", err)
	}
	return rec, nil
}

// put upserts the record for (tenant, user, app): the same connection keeps
// its creation time, another one replaces it.
func (s *connectionStore) put(ctx context.Context, tenant, user string, rec connectionRecord) (*connectionRecord, error) {
	now := s.now().UTC()
	rec.Created, rec.LastVerified = now, now
	old, err := s.get(ctx, tenant, user, rec.AppUUID)
	if err != nil {
		return nil, err
	}
	if old != nil && old.ConnectionID == rec.ConnectionID && !old.Created.IsZero() {
		rec.Created = old.Created
	}
	if err := s.sealOwner(ctx, &rec, tenant, user); err != nil {
		return nil, fmt.Errorf("sealing the connection's owner: %w", err)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encoding connection: %w", err)
	}
	key, err := s.connectionKey(ctx, tenant, user, rec.AppUUID)
	if err != nil {
		return nil, err
	}
	if err := s.storage.Store(ctx, key, data); err != nil {
		return nil, fmt.Errorf("storing connection: %w", err)
	}
	if old == nil || old.ConnectionID != rec.ConnectionID { // events for zapier_triggers (triggers_connevents.go)
		if old != nil {
			connectionChanged(eventConnectionDeleted, tenant, user, *old)
		}
		connectionChanged(eventConnectionCreated, tenant, user, rec)
	}
	return &rec, nil
}

// touch records a successful re-verification of a stored record.
func (s *connectionStore) touch(ctx context.Context, tenant, user string, rec *connectionRecord, title string) (*connectionRecord, error) {
	updated := *rec
	if title != "" {
		updated.Title = title
	}
	return s.put(ctx, tenant, user, updated)
}

// list returns the caller's records, ordered by app.
func (s *connectionStore) list(ctx context.Context, tenant, user string) ([]connectionRecord, error) {
	prefix, err := s.userPrefix(ctx, tenant, user)
	if err != nil {
		return nil, err
	}
	if err := s.migrateAll(ctx, legacyUserPrefix(tenant, user), prefix); err != nil {
		return nil, err
	}
	keys, err := s.storage.List(ctx, prefix, false)
	if errors.Is(err, fs.ErrNotExist) {
		return []connectionRecord{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing connections: %w", err)
	}
	out := make([]connectionRecord, 0, len(keys))
	for _, k := range keys {
		if !isKeyPart(path.Base(k)) {
			continue // e.g. a file storage's temporary file during a write
		}
		data, err := s.storage.Load(ctx, k)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("loading connection: %w", err)
		}
		var rec connectionRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			return nil, fmt.Errorf("decoding stored connection: %w", err)
		}
		out = append(out, rec)
	}
	sort.Slice(out, func(i, j int) bool { return strings.Compare(out[i].App, out[j].App) < 0 })
	return out, nil
}

// remove deletes the caller's record for the app; it reports whether there
// was one.
func (s *connectionStore) remove(ctx context.Context, tenant, user, appUUID string) (bool, error) {
	key, err := s.connectionKey(ctx, tenant, user, appUUID)
	if err != nil {
		return false, err
	}
	if _, err := s.migrate(ctx, legacyConnectionKey(tenant, user, appUUID), key); err != nil {
		return false, err
	}
	old, _ := s.get(ctx, tenant, user, appUUID) // for the connection.deleted event
	if !s.storage.Exists(ctx, key) {
		return false, nil
	}
	if err := s.storage.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("deleting connection: %w", err)
	}
	if old != nil {
		connectionChanged(eventConnectionDeleted, tenant, user, *old) // triggers_connevents.go
	}
	return true, nil
}
