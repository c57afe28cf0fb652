package idempotency

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"
)

// recordVersion is written in every record, so the format can change
// without misreading old records. Records in the states version 1 did not
// know (committed, provisional) are written as version 2, so a gateway of
// an earlier release leaves them alone (it neither sweeps them as corrupt
// nor takes them over) during a rolling upgrade.
const (
	recordVersion  = 1
	recordVersion2 = 2
)

// Record states.
const (
	statusPending = "pending"
	// statusCommitted: the work may have been done (the upstream call was
	// made or is being made); the record is never taken over.
	statusCommitted = "committed"
	// statusProvisional: the work was done and its provisional answer is
	// stored; a duplicate replays it if the request never finishes.
	statusProvisional = "provisional"
	statusDone        = "done"
)

// record is the stored JSON of one key.
type record struct {
	Version int `json:"version"`
	// Fingerprint is the hex SHA-256 of the request fingerprint.
	Fingerprint string `json:"fingerprint"`
	State       string `json:"state"`
	// Created is when the key was first claimed; TTL and PendingTimeout
	// count from it.
	Created time.Time `json:"created"`
	// Owner is a random token of the Begin that wrote the pending record, so
	// that a request whose record was taken over cannot finish or delete
	// the new owner's.
	Owner    string    `json:"owner"`
	Finished time.Time `json:"finished,omitzero"`
	Response *Response `json:"response,omitempty"`
	// Subject and Sealed attribute the record to its caller, for
	// offboarding (ForgetWhere): a keyed name of the caller and the caller
	// sealed, both opaque to this package. Records written before they
	// existed have neither (they expire with the TTL).
	Subject string `json:"subject,omitempty"`
	Sealed  string `json:"sealed,omitempty"`
}

// version is the format version rec must be written as.
func (rec *record) version() int {
	if rec.State == statusCommitted || rec.State == statusProvisional {
		return recordVersion2
	}
	return recordVersion
}

// live reports whether rec is a record its owner is still working on.
func (rec *record) live() bool {
	return rec.State == statusPending || rec.State == statusCommitted || rec.State == statusProvisional
}

var (
	// errCorrupt: a record that is not valid JSON or misses fields. Sweep
	// deletes such records, since they would never expire otherwise.
	errCorrupt = errors.New("idempotency: corrupt record")
	// errVersion: a record of another format version, likely written by a
	// newer gateway during a rolling upgrade. Left alone.
	errVersion = errors.New("idempotency: unsupported record version")
)

func decodeRecord(b []byte) (*record, error) {
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	if rec.Version != recordVersion && rec.Version != recordVersion2 {
		return nil, fmt.Errorf("%w %d", errVersion, rec.Version)
	}
	switch {
	case !isHexSHA256(rec.Fingerprint), rec.Created.IsZero(), rec.Owner == "":
		return nil, fmt.Errorf("%w: missing fields", errCorrupt)
	case rec.State == statusPending, rec.State == statusCommitted:
	case (rec.State == statusDone || rec.State == statusProvisional) && rec.Response != nil:
	default:
		return nil, fmt.Errorf("%w: state %q", errCorrupt, rec.State)
	}
	return &rec, nil
}

// recordID is the hex SHA-256 of (scope, key). scope is length-prefixed, so
// the encoding is injective: ("ab", "c") and ("a", "bc") differ. The raw
// scope and key are never stored.
func recordID(scope, key string) string {
	h := sha256.New()
	h.Write([]byte("caddy-zapier idempotency v1\x00"))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(scope)))
	h.Write(n[:])
	h.Write([]byte(scope))
	h.Write([]byte(key))
	return hex.EncodeToString(h.Sum(nil))
}

func hashHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func isHexSHA256(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

func (s *Store) storageKey(id string) string { return s.prefix + "/" + id }

// load reads and decodes a record; a missing one gives an fs.ErrNotExist.
func (s *Store) load(ctx context.Context, id string) (*record, error) {
	b, err := s.storage.Load(ctx, s.storageKey(id))
	if err != nil {
		return nil, err
	}
	rec, err := decodeRecord(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.storageKey(id), err)
	}
	return rec, nil
}

func (s *Store) put(ctx context.Context, id string, rec *record) error {
	rec.Version = rec.version()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return s.storage.Store(ctx, s.storageKey(id), b)
}

// withLock runs fn under the storage lock of record id.
func (s *Store) withLock(ctx context.Context, id string, fn func() error) error {
	name := s.storageKey(id)
	if err := s.storage.Lock(ctx, name); err != nil {
		return fmt.Errorf("idempotency: lock %s: %w", name, err)
	}
	err := fn()
	// Unlock even if ctx ended meanwhile. An unlock error is not reported:
	// what fn did is already durable, failing now would strand a pending
	// record nobody finishes, and a lock left behind is the backend's to
	// expire (certmagic's file locks go stale after seconds).
	_ = s.storage.Unlock(context.WithoutCancel(ctx), name)
	return err
}

// ticket is the claim of a Proceed outcome.
type ticket struct {
	s       *Store
	id      string
	fp      string
	owner   string
	created time.Time
	caller  Caller

	mu      sync.Mutex // serializes Finish and Abandon
	settled bool       // Finish or Abandon succeeded
}

func (s *Store) newTicket(id, fp string, now time.Time, caller Caller) (*ticket, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return &ticket{s: s, id: id, fp: fp, owner: hex.EncodeToString(b[:]), created: now, caller: caller}, nil
}

func (t *ticket) pending() *record {
	return &record{Version: recordVersion, Fingerprint: t.fp, State: statusPending, Created: t.created, Owner: t.owner,
		Subject: t.caller.Subject, Sealed: t.caller.Sealed}
}

// ours reports whether this ticket may write the record: it is still our
// live record, or it is gone (then nobody else owns the key, and storing
// our response spares a retry from doing the work again).
func (t *ticket) ours(rec *record) bool {
	return rec == nil || rec.live() && rec.Owner == t.owner
}

// commit marks the record committed: the work is about to be done, so the
// record is never taken over from now on.
func (t *ticket) commit(ctx context.Context) error {
	return t.advance(ctx, statusCommitted, nil)
}

// provisional stores r as the answer a duplicate replays if this request
// never finishes.
func (t *ticket) provisional(ctx context.Context, r Response) error {
	if err := r.storable(); err != nil {
		return err
	}
	return t.advance(ctx, statusProvisional, &r)
}

// advance moves our live record to state (with the response r, if any).
func (t *ticket) advance(ctx context.Context, state string, r *Response) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.settled {
		return errors.New("idempotency: Commit or Provisional after Finish or Abandon")
	}
	return t.s.withLock(ctx, t.id, func() error {
		rec, err := t.s.loadOrNil(ctx, t.id)
		if err != nil {
			return err
		}
		if !t.ours(rec) {
			return ErrLost
		}
		next := t.pending()
		next.State = state
		if rec != nil && rec.State == statusProvisional && state == statusCommitted {
			return nil // already past committed
		}
		if r != nil {
			resp := r.clone()
			next.Response = &resp
		}
		return t.s.put(ctx, t.id, next)
	})
}

func (t *ticket) finish(ctx context.Context, r Response) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.settled {
		return errors.New("idempotency: Finish after Finish or Abandon")
	}
	if err := r.storable(); err != nil {
		// Release the key rather than leave duplicates waiting for
		// PendingTimeout on a record that will never be done.
		if rerr := t.release(ctx); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	err := t.s.withLock(ctx, t.id, func() error {
		rec, err := t.s.loadOrNil(ctx, t.id)
		if err != nil {
			return err
		}
		if !t.ours(rec) {
			return ErrLost
		}
		done := t.pending()
		done.State = statusDone
		done.Finished = t.s.now()
		resp := r.clone()
		done.Response = &resp
		return t.s.put(ctx, t.id, done)
	})
	if err == nil {
		t.settled = true
	}
	return err
}

// storable checks that r can be stored and replayed.
func (r Response) storable() error {
	if len(r.Body) > MaxBodySize {
		return ErrResponseTooLarge
	}
	// A replay hands Status to WriteHeader, which panics outside 100-999.
	if r.Status < 100 || r.Status > 599 {
		return fmt.Errorf("idempotency: response status %d is not an HTTP status", r.Status)
	}
	return nil
}

func (t *ticket) abandon(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.settled {
		return nil
	}
	return t.release(ctx)
}

// releaseCommitted deletes our record whatever its state: the caller knows
// the work did not happen.
func (t *ticket) releaseCommitted(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.settled {
		return nil
	}
	return t.deleteOurs(ctx, true)
}

// release deletes the record if it is still our pending one.
func (t *ticket) release(ctx context.Context) error {
	return t.deleteOurs(ctx, false)
}

func (t *ticket) deleteOurs(ctx context.Context, committedToo bool) error {
	err := t.s.withLock(ctx, t.id, func() error {
		rec, err := t.s.loadOrNil(ctx, t.id)
		if err != nil {
			return err
		}
		if rec == nil || !t.ours(rec) {
			return nil // gone or taken over: nothing of ours to delete
		}
		if rec.State != statusPending && !committedToo {
			// The work may have been done: a retry must not do it again.
			return ErrCommitted
		}
		return t.s.storage.Delete(ctx, t.s.storageKey(t.id))
	})
	if err == nil {
		t.settled = true
	}
	return err
}

// loadOrNil is load with a missing record as nil.
func (s *Store) loadOrNil(ctx context.Context, id string) (*record, error) {
	rec, err := s.load(ctx, id)
	if isNotExist(err) {
		return nil, nil
	}
	return rec, err
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
