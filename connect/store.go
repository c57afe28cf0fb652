package connect

import (
	"context"
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
	"github.com/zapgate/caddy-zapier/gateway"
)

// ConnectionsPrefix is where stored connections live in storage:
// zapier/connections/k<keyed hash of tenant and user>/<app UUID encoded by
// StorageKeyPart>. Records written before the keyed names, under
// <tenant>/<user> encoded by StorageKeyPart, are moved there when read.
const ConnectionsPrefix = "zapier/connections"

// Record is what the gateway remembers about a user's connection
// to one app.
type Record struct {
	// ConnectionID is Zapier's authentication id (always a string).
	ConnectionID string `json:"connection_id"`
	// App is Connect's implementation id (e.g. SlackCLIAPI), AppUUID the
	// API's app id.
	App          string    `json:"app"`
	AppUUID      string    `json:"app_uuid"`
	Title        string    `json:"title,omitempty"`
	Created      time.Time `json:"created"`
	LastVerified time.Time `json:"last_verified"`
	// Owner is (tenant, user), sealed (store_owner.go): connection
	// webhooks name only the connection.
	Owner string `json:"owner,omitempty"`
	// Status is what the health sweep last found at Zapier (ok, expired,
	// missing; Health), Checked when. Records stored before the
	// sweep existed have neither and read as ok.
	Status  string    `json:"status,omitempty"`
	Checked time.Time `json:"checked,omitzero"`
}

// Store keeps a user's accounts of each app (a work and a personal
// Slack) in one storage file per (tenant, user, app), so
// every gateway sharing the storage sees the same connections. A file holds
// {"accounts":[…]}; files written before several accounts were kept hold
// one bare record, and are read as one account.
type Store struct {
	storage certmagic.Storage
	now     func() time.Time
	keys    *StateKeeper // the storage-name key, shared through storage

	// OnAdded and OnRemoved, when set, hear of every account Put adds (not
	// one it updates) and every one Remove deletes, after the change is
	// stored.
	OnAdded, OnRemoved func(tenant, user string, rec Record)
}

// connectionFile is what one storage file holds.
type connectionFile struct {
	Accounts []Record `json:"accounts"`
}

// decodeConnectionFile reads either form, most recently verified first.
func decodeConnectionFile(data []byte) ([]Record, error) {
	var probe struct {
		Accounts     *[]Record `json:"accounts"`
		ConnectionID string    `json:"connection_id"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("decoding stored connection: %w", err)
	}
	var recs []Record
	switch {
	case probe.Accounts != nil:
		recs = *probe.Accounts
	case probe.ConnectionID != "":
		var rec Record
		if err := json.Unmarshal(data, &rec); err != nil {
			return nil, fmt.Errorf("decoding stored connection: %w", err)
		}
		recs = []Record{rec}
	}
	sortAccounts(recs)
	return recs, nil
}

// sortAccounts orders an app's accounts most recently verified first: the
// first is the default one.
func sortAccounts(recs []Record) {
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].LastVerified.After(recs[j].LastVerified) })
}

// NewStore keeps connections in s.
func NewStore(s certmagic.Storage) *Store {
	return &Store{storage: s, now: time.Now, keys: NewStateKeeper(s, 0)}
}

// userPrefix is where the identity's records live: a keyed hash, so the
// storage does not say who is connected.
func (s *Store) userPrefix(ctx context.Context, tenant, user string) (string, error) {
	name, err := s.keys.identityStorageName(ctx, tenant, user)
	if err != nil {
		return "", err
	}
	return path.Join(ConnectionsPrefix, name), nil
}

func (s *Store) connectionKey(ctx context.Context, tenant, user, appUUID string) (string, error) {
	prefix, err := s.userPrefix(ctx, tenant, user)
	if err != nil {
		return "", err
	}
	return path.Join(prefix, StorageKeyPart(appUUID)), nil
}

// Accounts returns the caller's accounts of the app, most recently
// verified first (none: an empty slice).
func (s *Store) Accounts(ctx context.Context, tenant, user, appUUID string) ([]Record, error) {
	key, err := s.connectionKey(ctx, tenant, user, appUUID)
	if err != nil {
		return nil, err
	}
	data, err := s.storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		rec, err := s.migrate(ctx, tenant, user, legacyConnectionKey(tenant, user, appUUID), key)
		if err != nil || rec == nil {
			return nil, err
		}
		return []Record{*rec}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading connection: %w", err)
	}
	return decodeConnectionFile(data)
}

// Get returns the caller's account of the app with connection id connID,
// or with connID empty the default one (most recently verified); nil when
// there is none.
func (s *Store) Get(ctx context.Context, tenant, user, appUUID string, connID ...string) (*Record, error) {
	recs, err := s.Accounts(ctx, tenant, user, appUUID)
	if err != nil {
		return nil, err
	}
	for i := range recs {
		if len(connID) == 0 || connID[0] == "" || recs[i].ConnectionID == connID[0] {
			return &recs[i], nil
		}
	}
	return nil, nil
}

// Update changes the caller's accounts of the app under the storage lock,
// so two gateways adding accounts at once both keep theirs.
func (s *Store) Update(ctx context.Context, tenant, user, appUUID string, change func([]Record) ([]Record, error)) error {
	key, err := s.connectionKey(ctx, tenant, user, appUUID)
	if err != nil {
		return err
	}
	if err := s.storage.Lock(ctx, key); err != nil {
		return fmt.Errorf("locking connections: %w", err)
	}
	defer func() { _ = s.storage.Unlock(context.WithoutCancel(ctx), key) }()
	recs, err := s.Accounts(ctx, tenant, user, appUUID)
	if err != nil {
		return err
	}
	if recs, err = change(recs); err != nil {
		return err
	}
	if len(recs) == 0 {
		if err := s.storage.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("deleting connection: %w", err)
		}
		return nil
	}
	sortAccounts(recs)
	data, err := json.Marshal(connectionFile{Accounts: recs})
	if err != nil {
		return fmt.Errorf("encoding connection: %w", err)
	}
	if err := s.storage.Store(ctx, key, data); err != nil {
		return fmt.Errorf("storing connection: %w", err)
	}
	return nil
}

// Put adds an account of the app, or updates it when the user has it
// already (same connection id: it keeps its creation time); either way it
// becomes the default one.
func (s *Store) Put(ctx context.Context, tenant, user string, rec Record) (*Record, error) {
	now := s.now().UTC()
	rec.Created, rec.LastVerified = now, now
	rec.Status, rec.Checked = StatusOK, now // just verified
	if err := s.sealOwner(ctx, &rec, tenant, user); err != nil {
		return nil, fmt.Errorf("sealing the connection's owner: %w", err)
	}
	added := true
	err := s.Update(ctx, tenant, user, rec.AppUUID, func(recs []Record) ([]Record, error) {
		for i := range recs {
			if recs[i].ConnectionID == rec.ConnectionID {
				if !recs[i].Created.IsZero() {
					rec.Created = recs[i].Created
				}
				recs[i], added = rec, false
				return recs, nil
			}
		}
		return append(recs, rec), nil
	})
	if err != nil {
		return nil, err
	}
	if added && s.OnAdded != nil {
		s.OnAdded(tenant, user, rec)
	}
	return &rec, nil
}

// Touch records a successful re-verification of a stored record.
func (s *Store) Touch(ctx context.Context, tenant, user string, rec *Record, title string) (*Record, error) {
	updated := *rec
	if title != "" {
		updated.Title = title
	}
	return s.Put(ctx, tenant, user, updated)
}

// List returns the caller's accounts, ordered by app, then most recently
// verified first.
func (s *Store) List(ctx context.Context, tenant, user string) ([]Record, error) {
	prefix, err := s.userPrefix(ctx, tenant, user)
	if err != nil {
		return nil, err
	}
	if err := s.migrateAll(ctx, tenant, user, legacyUserPrefix(tenant, user), prefix); err != nil {
		return nil, err
	}
	keys, err := s.storage.List(ctx, prefix, false)
	if errors.Is(err, fs.ErrNotExist) {
		return []Record{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing connections: %w", err)
	}
	out := make([]Record, 0, len(keys))
	for _, k := range keys {
		if !IsKeyPart(path.Base(k)) {
			continue // e.g. a file storage's temporary file during a write
		}
		data, err := s.storage.Load(ctx, k)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("loading connection: %w", err)
		}
		recs, err := decodeConnectionFile(data)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	sort.SliceStable(out, func(i, j int) bool { return strings.Compare(out[i].App, out[j].App) < 0 })
	return out, nil
}

// Remove deletes the caller's account connID of the app (every account of
// it when connID is empty) and returns what it deleted.
func (s *Store) Remove(ctx context.Context, tenant, user, appUUID, connID string) ([]Record, error) {
	var removed []Record
	err := s.Update(ctx, tenant, user, appUUID, func(recs []Record) ([]Record, error) {
		kept := recs[:0:0]
		for _, rec := range recs {
			if connID == "" || rec.ConnectionID == connID {
				removed = append(removed, rec)
			} else {
				kept = append(kept, rec)
			}
		}
		return kept, nil
	})
	if err != nil {
		return nil, err
	}
	for _, rec := range removed {
		if s.OnRemoved != nil {
			s.OnRemoved(tenant, user, rec)
		}
	}
	return removed, nil
}

// Storage names of identities. Connection records name their owner by an
// HMAC of (tenant, user) under a key derived from the connect state key in
// storage (zapier/connect-state.key), so every gateway sharing the storage
// computes the same names, and reading the storage without that key does
// not tell who is connected. Before keyed names, connection paths were the
// reversible StorageKeyPart of tenant and user; a connection found under
// its old path is moved to the new one.

// IdentityHMAC is the keyed hash that names an identity in storage.
// Identity values cannot contain NUL, so the join is unambiguous.
func (k *StateKeeper) IdentityHMAC(ctx context.Context, tenant, user string) ([]byte, error) {
	return gateway.NewNamespace(k).Subject(ctx, gateway.Identity{Tenant: tenant, User: user})
}

// identityStorageName is the identity's storage key part: "k" and 64
// lower-case hex digits, apart from StorageKeyPart's "b"/"h" forms.
func (k *StateKeeper) identityStorageName(ctx context.Context, tenant, user string) (string, error) {
	sum, err := k.IdentityHMAC(ctx, tenant, user)
	if err != nil {
		return "", err
	}
	return "k" + hex.EncodeToString(sum), nil
}

func legacyUserPrefix(tenant, user string) string {
	return path.Join(ConnectionsPrefix, StorageKeyPart(tenant), StorageKeyPart(user))
}

func legacyConnectionKey(tenant, user, appUUID string) string {
	return path.Join(legacyUserPrefix(tenant, user), StorageKeyPart(appUUID))
}

// migrate moves a record from its legacy key to key, unless key already has
// one (the newer wins and the legacy one is dropped), sealing its owner on
// the way (connection webhooks map a connection back to its owner by it).
// It returns the moved record, or nil when there was none.
func (s *Store) migrate(ctx context.Context, tenant, user, legacy, key string) (*Record, error) {
	data, err := s.storage.Load(ctx, legacy)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading connection: %w", err)
	}
	rec := new(Record)
	if err := json.Unmarshal(data, rec); err != nil {
		return nil, fmt.Errorf("decoding stored connection: %w", err)
	}
	if rec.Owner == "" {
		if err := s.sealOwner(ctx, rec, tenant, user); err != nil {
			return nil, err
		}
		if data, err = json.Marshal(rec); err != nil {
			return nil, err
		}
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
func (s *Store) migrateAll(ctx context.Context, tenant, user, legacyPrefix, prefix string) error {
	keys, err := s.storage.List(ctx, legacyPrefix, false)
	if errors.Is(err, fs.ErrNotExist) || len(keys) == 0 && err == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing connections: %w", err)
	}
	for _, k := range keys {
		if !IsKeyPart(path.Base(k)) {
			continue
		}
		if _, err := s.migrate(ctx, tenant, user, k, path.Join(prefix, path.Base(k))); err != nil {
			return err
		}
	}
	_ = s.storage.Delete(ctx, legacyPrefix) // now empty; a leftover is harmless
	return nil
}
