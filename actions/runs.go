package actions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/internal/sweep"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

const (
	// RunsPrefix is where run records live in storage:
	// zapier/action-runs/<run id encoded by connect.StorageKeyPart>.
	RunsPrefix = "zapier/action-runs"
	// RunRetention is how long Zapier keeps a run (zapier-api.md §4.6);
	// the gateway forgets who owns a run after that too.
	RunRetention = 7 * 24 * time.Hour
	// RunSweepEvery is how often, at most, a gateway sweeps old records.
	RunSweepEvery = time.Hour
	// MaxRunIDLen is the longest run id ValidRunID accepts.
	MaxRunIDLen = 128
	// CallbackStoragePoll is how often a run waiting for its callback
	// re-reads its record (for a callback that reached another sidecar
	// sharing the storage), and how often Complete retries.
	CallbackStoragePoll = 100 * time.Millisecond
	// CallbackRecordGrace covers a callback that arrives before the run's
	// creator has recorded the run (Zapier can call back at once).
	CallbackRecordGrace = 2 * time.Second
)

var (
	// ErrRunUnknown is Complete's answer for a run with no record.
	ErrRunUnknown = errors.New("unknown run")
	// ErrRunCompleted is Complete's answer for a run whose result is
	// already stored.
	ErrRunCompleted = errors.New("run already completed")
)

// ValidRunID accepts what can be a Zapier run id (a UUID, or ids such as
// arun_abc123): printable ASCII without '/', at most 128 bytes.
func ValidRunID(id string) bool {
	if id == "" || len(id) > MaxRunIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f || c == '/' {
			return false
		}
	}
	return true
}

// IdentityKeys names identities in storage by a keyed hash;
// *connect.StateKeeper is one.
type IdentityKeys interface {
	IdentityHMAC(ctx context.Context, tenant, user string) ([]byte, error)
}

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

// Owner is the owner of a run record: "k:" and the identity's keyed hash.
func Owner(ctx context.Context, keys IdentityKeys, key tokencache.Key) (string, error) {
	sum, err := keys.IdentityHMAC(ctx, key.Tenant, key.User)
	if err != nil {
		return "", err
	}
	return "k:" + hex.EncodeToString(sum), nil
}

// LegacyOwner is the unkeyed owner hash of run records written before
// keyed names. Identity values have no control characters, so the NUL
// separator keeps the pair unambiguous.
func LegacyOwner(key tokencache.Key) string {
	sum := sha256.Sum256([]byte(key.Tenant + "\x00" + key.User))
	return hex.EncodeToString(sum[:])
}

// RunRecord is what the gateway stores about a run it created.
type RunRecord struct {
	Owner   string    `json:"owner"` // Owner of (tenant, user)
	App     string    `json:"app"`   // the app's UUID
	Action  string    `json:"action"`
	Created time.Time `json:"created"`
	// Stored is the stored action the run is of ("" for a /v2/action-runs
	// run): its polls read /actions/v1/stored-actions/{stored}/runs/{id}.
	Stored string `json:"stored,omitempty"`
	// Result is the finished run, when Zapier's callback delivered it.
	Result *RunResult `json:"result,omitempty"`
}

// RunResult is a finished run as its callback delivered it.
type RunResult struct {
	Status   string          `json:"status"`
	Results  json.RawMessage `json:"results"`
	Errors   json.RawMessage `json:"errors"`
	Received time.Time       `json:"received"`
}

// Run is the result as the run it finished.
func (r *RunResult) Run(id string) zapierapi.ActionRun {
	return zapierapi.ActionRun{ID: id, Status: r.Status, Results: r.Results, Errors: r.Errors}
}

// RunKey is the storage name of a run's record.
func RunKey(runID string) string { return path.Join(RunsPrefix, connect.StorageKeyPart(runID)) }

// RunStore remembers who started which run, in Caddy storage, so runs/{id}
// answers the owner, and only the owner, on every gateway sharing the
// storage and after restarts. A record holds a keyed hash of the identity
// (Owner), never the identity itself, and is forgotten after Zapier's
// retention.
type RunStore struct {
	Storage certmagic.Storage
	Now     func() time.Time
	BG      context.Context // bounds background sweeps; ends with the config
	Keys    IdentityKeys    // the storage-name key

	sweeper sweep.Sweeper
}

// NewRunStore returns a store on storage with the real clock.
func NewRunStore(bg context.Context, storage certmagic.Storage, keys IdentityKeys) *RunStore {
	return &RunStore{Storage: storage, Now: time.Now, BG: bg, Keys: keys}
}

// Put records that key started runID of the app's action, and maybe starts
// a background sweep of old records.
func (s *RunStore) Put(ctx context.Context, runID string, key tokencache.Key, appUUID, action string) error {
	return s.PutRun(ctx, runID, key, appUUID, action, "")
}

// PutRun is Put for a run of stored action storedID ("" for none).
func (s *RunStore) PutRun(ctx context.Context, runID string, key tokencache.Key, appUUID, action, storedID string) error {
	owner, err := Owner(ctx, s.Keys, key)
	if err != nil {
		return err
	}
	data, err := json.Marshal(RunRecord{Owner: owner, App: appUUID, Action: action, Created: s.Now().UTC(), Stored: storedID})
	if err != nil {
		return fmt.Errorf("encoding run record: %w", err)
	}
	if err := s.Storage.Store(ctx, RunKey(runID), data); err != nil {
		return fmt.Errorf("storing run record: %w", err)
	}
	s.maybeSweep()
	return nil
}

// Owned returns the run's record and whether this identity started it
// (nil when there is no such run, or it is past Zapier's retention).
func (s *RunStore) Owned(ctx context.Context, runID string, key tokencache.Key) (*RunRecord, bool, error) {
	rec, err := s.Get(ctx, runID)
	if err != nil || rec == nil {
		return nil, false, err
	}
	owner, err := Owner(ctx, s.Keys, key)
	if err != nil {
		return nil, false, err
	}
	return rec, rec.Owner == owner || rec.Owner == LegacyOwner(key), nil
}

// Get loads a run's record; nil when there is none (or it is past Zapier's
// retention).
func (s *RunStore) Get(ctx context.Context, runID string) (*RunRecord, error) {
	rec, err := loadRecord[RunRecord](ctx, s.Storage, RunKey(runID), "run record")
	if rec == nil || err != nil {
		return nil, err
	}
	if s.Now().Sub(rec.Created) >= RunRetention {
		return nil, nil
	}
	return rec, nil
}

// Complete stores a run's result once, under the storage lock so two
// sidecars receiving the same delivery accept it once between them. It
// waits up to CallbackRecordGrace for a record not written yet.
func (s *RunStore) Complete(ctx context.Context, runID string, result *RunResult) error {
	if !ValidRunID(runID) {
		return ErrRunUnknown
	}
	key := RunKey(runID)
	grace := time.Now().Add(CallbackRecordGrace)
	for {
		if err := s.Storage.Lock(ctx, key); err != nil {
			return fmt.Errorf("locking run record: %w", err)
		}
		rec, err := s.Get(ctx, runID)
		if err == nil && rec != nil && rec.Result == nil {
			rec.Result = result
			var data []byte
			if data, err = json.Marshal(rec); err == nil {
				err = s.Storage.Store(ctx, key, data)
			}
		}
		_ = s.Storage.Unlock(context.WithoutCancel(ctx), key)
		switch {
		case err != nil:
			return err
		case rec != nil && rec.Result != result:
			return ErrRunCompleted
		case rec != nil:
			return nil
		case time.Now().After(grace):
			return ErrRunUnknown
		}
		select {
		case <-ctx.Done():
			return ErrRunUnknown
		case <-time.After(CallbackStoragePoll):
		}
	}
}

// maybeSweep deletes records older than the retention, at most once per
// RunSweepEvery per gateway, in the background.
func (s *RunStore) maybeSweep() {
	s.sweeper.Maybe(s.BG, s.Now(), RunSweepEvery, s.Sweep)
}

// Sweep deletes the records whose storage age is past the retention.
func (s *RunStore) Sweep(ctx context.Context) {
	keys, err := s.Storage.List(ctx, RunsPrefix, false)
	if err != nil {
		return
	}
	cutoff := s.Now().Add(-RunRetention)
	for _, k := range keys {
		if ctx.Err() != nil {
			return
		}
		if !connect.IsKeyPart(path.Base(k)) {
			continue
		}
		info, err := s.Storage.Stat(ctx, k)
		if err == nil && info.Modified.Before(cutoff) {
			_ = s.Storage.Delete(ctx, k)
		}
	}
}

// ForgetRuns deletes the run records the identities started (keyed or
// legacy owner) and returns how many.
func ForgetRuns(ctx context.Context, storage certmagic.Storage, keys IdentityKeys, ids []connect.Identity) (int, error) {
	owners := map[string]bool{}
	for _, id := range ids {
		key := tokencache.Key{Tenant: id.Tenant, User: id.User}
		owner, err := Owner(ctx, keys, key)
		if err != nil {
			return 0, err
		}
		owners[owner], owners[LegacyOwner(key)] = true, true
	}
	if len(owners) == 0 {
		return 0, nil
	}
	names, err := storage.List(ctx, RunsPrefix, false)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("listing runs: %w", err)
	}
	n := 0
	for _, name := range names {
		if !connect.IsKeyPart(path.Base(name)) {
			continue
		}
		data, err := storage.Load(ctx, name)
		if err != nil {
			continue
		}
		var rec RunRecord
		if json.Unmarshal(data, &rec) != nil || !owners[rec.Owner] {
			continue
		}
		if err := storage.Delete(ctx, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("deleting a run record: %w", err)
		}
		n++
	}
	return n, nil
}

// loadRecord loads and decodes the JSON record at key; nil when there is
// none. what names it in errors.
func loadRecord[T any](ctx context.Context, storage certmagic.Storage, key, what string) (*T, error) {
	data, err := storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", what, err)
	}
	var rec T
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", what, err)
	}
	return &rec, nil
}
