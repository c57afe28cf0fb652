package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/connect"
)

// connectionsPrefix is where stored connections live in Caddy storage:
// zapier/connections/k<keyed hash of tenant and user>/<app UUID encoded by
// connect.StorageKeyPart> (storage_names.go). Records written before the keyed
// names, under <tenant>/<user> encoded by connect.StorageKeyPart, are moved there
// when read.
const connectionsPrefix = "zapier/connections"

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
	// Status is what the health sweep last found at Zapier (ok, expired,
	// missing; connect_health.go), Checked when. Records stored before the
	// sweep existed have neither and read as ok.
	Status  string    `json:"status,omitempty"`
	Checked time.Time `json:"checked,omitzero"`
}

// connectionStore keeps a user's accounts of each app (a work and a
// personal Slack) in one Caddy storage file per (tenant, user, app), so
// every gateway sharing the storage sees the same connections. A file holds
// {"accounts":[…]}; files written before several accounts were kept hold
// one bare record, and are read as one account.
type connectionStore struct {
	storage certmagic.Storage
	now     func() time.Time
	keys    *stateKeeper // the storage-name key, shared through storage
}

// connectionFile is what one storage file holds.
type connectionFile struct {
	Accounts []connectionRecord `json:"accounts"`
}

// decodeConnectionFile reads either form, most recently verified first.
func decodeConnectionFile(data []byte) ([]connectionRecord, error) {
	var probe struct {
		Accounts     *[]connectionRecord `json:"accounts"`
		ConnectionID string              `json:"connection_id"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("decoding stored connection: %w", err)
	}
	var recs []connectionRecord
	switch {
	case probe.Accounts != nil:
		recs = *probe.Accounts
	case probe.ConnectionID != "":
		var rec connectionRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			return nil, fmt.Errorf("decoding stored connection: %w", err)
		}
		recs = []connectionRecord{rec}
	}
	sortAccounts(recs)
	return recs, nil
}

// sortAccounts orders an app's accounts most recently verified first: the
// first is the default one.
func sortAccounts(recs []connectionRecord) {
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].LastVerified.After(recs[j].LastVerified) })
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
	return path.Join(prefix, connect.StorageKeyPart(appUUID)), nil
}

// accounts returns the caller's accounts of the app, most recently
// verified first (none: an empty slice).
func (s *connectionStore) accounts(ctx context.Context, tenant, user, appUUID string) ([]connectionRecord, error) {
	key, err := s.connectionKey(ctx, tenant, user, appUUID)
	if err != nil {
		return nil, err
	}
	data, err := s.storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		rec, err := s.migrate(ctx, legacyConnectionKey(tenant, user, appUUID), key)
		if err != nil || rec == nil {
			return nil, err
		}
		return []connectionRecord{*rec}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading connection: %w", err)
	}
	return decodeConnectionFile(data)
}

// get returns the caller's account of the app with connection id connID,
// or with connID empty the default one (most recently verified); nil when
// there is none.
func (s *connectionStore) get(ctx context.Context, tenant, user, appUUID string, connID ...string) (*connectionRecord, error) {
	recs, err := s.accounts(ctx, tenant, user, appUUID)
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

// update changes the caller's accounts of the app under the storage lock,
// so two gateways adding accounts at once both keep theirs.
func (s *connectionStore) update(ctx context.Context, tenant, user, appUUID string, change func([]connectionRecord) ([]connectionRecord, error)) error {
	key, err := s.connectionKey(ctx, tenant, user, appUUID)
	if err != nil {
		return err
	}
	if err := s.storage.Lock(ctx, key); err != nil {
		return fmt.Errorf("locking connections: %w", err)
	}
	defer func() { _ = s.storage.Unlock(context.WithoutCancel(ctx), key) }()
	recs, err := s.accounts(ctx, tenant, user, appUUID)
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

// put adds an account of the app, or updates it when the user has it
// already (same connection id: it keeps its creation time); either way it
// becomes the default one.
func (s *connectionStore) put(ctx context.Context, tenant, user string, rec connectionRecord) (*connectionRecord, error) {
	now := s.now().UTC()
	rec.Created, rec.LastVerified = now, now
	rec.Status, rec.Checked = connect.StatusOK, now // just verified
	if err := s.sealOwner(ctx, &rec, tenant, user); err != nil {
		return nil, fmt.Errorf("sealing the connection's owner: %w", err)
	}
	added := true
	err := s.update(ctx, tenant, user, rec.AppUUID, func(recs []connectionRecord) ([]connectionRecord, error) {
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
	if added { // events for zapier_triggers (triggers_connevents.go)
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

// list returns the caller's accounts, ordered by app, then most recently
// verified first.
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
		if !connect.IsKeyPart(path.Base(k)) {
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

// remove deletes the caller's account connID of the app (every account of
// it when connID is empty) and returns what it deleted.
func (s *connectionStore) remove(ctx context.Context, tenant, user, appUUID, connID string) ([]connectionRecord, error) {
	var removed []connectionRecord
	err := s.update(ctx, tenant, user, appUUID, func(recs []connectionRecord) ([]connectionRecord, error) {
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
		connectionChanged(eventConnectionDeleted, tenant, user, rec) // triggers_connevents.go
	}
	return removed, nil
}
