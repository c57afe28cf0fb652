// Package idempotency makes a non-idempotent request (the gateway's POST run)
// safe to retry under an Idempotency-Key: the same key and the same body
// within the TTL gets the first answer back instead of doing the work again,
// the same key with another body is refused, and concurrent duplicates do the
// work exactly once.
//
// State lives in a shared Storage (Caddy's, via certmagic) so that it holds
// across gateway processes sharing that storage and across restarts. Each
// record is read and written only under the storage's distributed lock for
// that record; a duplicate that finds the work in flight releases the lock
// and polls until the first request finishes.
//
// The package has no Caddy dependency: a certmagic.Storage satisfies Storage.
//
// Use, in a handler:
//
//	out, err := store.Begin(ctx, caller, r.Header.Get("Idempotency-Key"), body)
//	// ErrInvalidKey → 400, ErrKeyReused → 409, other errors → 500
//	if out.Kind == idempotency.Replay {
//		// write out.Response; return
//	}
//	bg := context.WithoutCancel(ctx)
//	defer out.Abandon(bg) // no-op once finished
//	// create the run; if none was created, return (Abandon frees the key)
//	_ = out.Finish(bg, resp) // an error means only that it is not cached
//	// write resp
package idempotency

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
)

// Defaults for the zero values of Config.
const (
	DefaultPrefix         = "idempotency"
	DefaultTTL            = 24 * time.Hour
	DefaultPendingTimeout = 2 * time.Minute
	DefaultPollInterval   = 100 * time.Millisecond
)

// Limits.
const (
	MaxKeyLen   = 255     // longest Idempotency-Key accepted
	MaxBodySize = 1 << 20 // largest response body Finish stores
)

var (
	// ErrInvalidKey: the key is empty, longer than MaxKeyLen, or has a
	// character outside printable ASCII. Callers answer 400.
	ErrInvalidKey = errors.New("idempotency: key must be 1-255 printable ASCII characters")

	// ErrKeyReused: the key was already used (within the TTL) with a
	// different request body. Callers answer 409 idempotency_key_reused.
	ErrKeyReused = errors.New("idempotency: key already used with a different request")

	// ErrResponseTooLarge: Finish refused to store a body over MaxBodySize.
	// The key is released; callers still answer with the response.
	ErrResponseTooLarge = errors.New("idempotency: response body too large to store")

	// ErrLost: Finish found the pending record taken over by another request
	// (this one ran past PendingTimeout), so the response was not stored.
	// Callers still answer with the response.
	ErrLost = errors.New("idempotency: pending record was taken over; response not stored")

	// ErrCommitted: Abandon found the record committed (Outcome.Commit): the
	// work may have been done, so the key is not freed for a retry. Use
	// Outcome.Release when the work is known not to have happened.
	ErrCommitted = errors.New("idempotency: the work may have been done; key not released")

	// ErrOutcomeUnknown: Begin found the key committed by a request that
	// never recorded how it ended (it crashed after the point of no return,
	// and PendingTimeout has passed). The work may have been done, so it is
	// not done again; callers answer 409.
	ErrOutcomeUnknown = errors.New("idempotency: the first request with this key may have done the work but never recorded its outcome")
)

// Storage is the core's storage interface (a subset of certmagic.Storage,
// so Caddy's configured storage satisfies it).
type Storage = gateway.Storage

// Config configures a Store. Only Storage is required.
type Config struct {
	Storage Storage
	// Prefix is the storage directory of the records, e.g. "zapier/idempotency".
	Prefix string
	// TTL is how long a key is remembered, counted from its first request.
	TTL time.Duration
	// PendingTimeout is how old a live record must be before its request is
	// taken as crashed. A pending record (nothing done yet) is then taken
	// over; a committed one (the work may have been done) never is: Begin
	// answers ErrOutcomeUnknown; a provisional one is replayed. It must
	// exceed the longest time the guarded request can take, or a slow
	// request is duplicated.
	PendingTimeout time.Duration
	// PollInterval is how often a waiting duplicate re-reads the record.
	PollInterval time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Store guards requests by idempotency key. It is safe for concurrent use.
type Store struct {
	storage        Storage
	prefix         string
	ttl            time.Duration
	pendingTimeout time.Duration
	poll           time.Duration
	now            func() time.Time
}

// New checks cfg, fills in defaults and returns a Store.
func New(cfg Config) (*Store, error) {
	if cfg.Storage == nil {
		return nil, errors.New("idempotency: Config.Storage is nil")
	}
	if cfg.TTL < 0 || cfg.PendingTimeout < 0 || cfg.PollInterval < 0 {
		return nil, errors.New("idempotency: negative duration in Config")
	}
	s := &Store{
		storage:        cfg.Storage,
		prefix:         cfg.Prefix,
		ttl:            orDefault(cfg.TTL, DefaultTTL),
		pendingTimeout: orDefault(cfg.PendingTimeout, DefaultPendingTimeout),
		poll:           orDefault(cfg.PollInterval, DefaultPollInterval),
		now:            cfg.Now,
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	// Clean under a root so that ".." cannot climb out of the storage.
	s.prefix = strings.Trim(path.Clean("/"+s.prefix), "/")
	if s.prefix == "" {
		return nil, fmt.Errorf("idempotency: Config.Prefix %q names no directory", cfg.Prefix)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Kind says what the caller of Begin must do.
type Kind int

const (
	// Proceed: do the work, then call Outcome.Finish with its response (or
	// Outcome.Abandon if it could not be done at all).
	Proceed Kind = iota + 1
	// Replay: answer with Outcome.Response; the work was done already.
	Replay
)

func (k Kind) String() string {
	switch k {
	case Proceed:
		return "Proceed"
	case Replay:
		return "Replay"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Response is what is replayed to duplicates: the status, a few headers
// (such as Location and Retry-After) and the body.
type Response struct {
	Status int               `json:"status"`
	Header map[string]string `json:"header,omitempty"`
	Body   []byte            `json:"body,omitempty"`
}

func (r Response) clone() Response {
	c := Response{Status: r.Status}
	if r.Header != nil {
		c.Header = make(map[string]string, len(r.Header))
		for k, v := range r.Header {
			c.Header[k] = v
		}
	}
	if r.Body != nil {
		c.Body = append([]byte{}, r.Body...)
	}
	return c
}

// Outcome is the result of Begin.
type Outcome struct {
	Kind Kind

	// Response is the stored response (Replay only).
	Response Response

	// Finish stores the response, so duplicates replay it (Proceed only).
	// A body over MaxBodySize is refused with ErrResponseTooLarge (and a
	// Status outside 100-599 with an error), and the key released. Pass a context that outlives the client's request
	// (context.WithoutCancel), so a client hanging up does not strand the
	// record.
	Finish func(ctx context.Context, r Response) error

	// Abandon deletes the pending record, so a retry with the key may try
	// again; use it when the work could not be done at all (Proceed only).
	// It is a no-op after Finish, so it can be deferred. After Commit it
	// deletes nothing and returns ErrCommitted.
	Abandon func(ctx context.Context) error

	// Commit marks the point of no return, just before the work (the
	// upstream call) is done: from then on the record is never taken over,
	// even past PendingTimeout, and Abandon no longer frees it (Proceed
	// only). A request that cannot Commit must not do the work.
	Commit func(ctx context.Context) error

	// Provisional stores r as the answer duplicates replay should this
	// request never finish (it crashed): the work was done and r says where
	// its result will be. Until Finish, duplicates still wait (Proceed
	// only).
	Provisional func(ctx context.Context, r Response) error

	// Release deletes the record even after Commit: use it only when the
	// work is known not to have happened (the upstream refused it).
	Release func(ctx context.Context) error
}

// Caller attributes records to whoever made the request, for offboarding:
// both values are opaque to this package and stored as given.
type Caller struct {
	// Scope separates callers: equal keys of different scopes are
	// independent. Only its hash is stored.
	Scope string
	// Subject and Sealed are stored in the record for ForgetWhere (a keyed
	// name of the caller, and the caller sealed).
	Subject, Sealed string
}

// Begin claims key for one request. scope is the caller's identity (only its
// hash is stored), so equal keys from different callers are independent;
// fingerprint identifies the request body (only its hash is stored).
//
// It returns Proceed if this request must do the work, Replay with the
// stored response if the work was done already, or ErrKeyReused if the key
// was used with another fingerprint (within the TTL, even if that request
// never finished). If the same request is in flight elsewhere, Begin waits
// without holding the lock: until it finishes (Replay), is abandoned or
// passes PendingTimeout (this request takes over: Proceed), or ctx ends
// (ctx's error).
func (s *Store) Begin(ctx context.Context, scope, key string, fingerprint []byte) (Outcome, error) {
	return s.BeginAs(ctx, Caller{Scope: scope}, key, fingerprint)
}

// BeginAs is Begin for a caller whose records carry its Subject and Sealed.
func (s *Store) BeginAs(ctx context.Context, caller Caller, key string, fingerprint []byte) (Outcome, error) {
	if !ValidKey(key) {
		return Outcome{}, ErrInvalidKey
	}
	id := recordID(caller.Scope, key)
	fp := hashHex(fingerprint)
	for {
		out, inFlight, err := s.claim(ctx, id, fp, caller)
		if err != nil || !inFlight {
			return out, err
		}
		out, settled, err := s.await(ctx, id, fp)
		if err != nil || settled {
			return out, err
		}
		// The record went away, expired or was abandoned: claim again.
	}
}

// ValidKey reports whether key is an acceptable Idempotency-Key: 1 to
// MaxKeyLen printable ASCII characters (space to tilde).
func ValidKey(key string) bool {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// claim decides under the record's lock. inFlight means the same request is
// pending elsewhere and the caller must wait.
func (s *Store) claim(ctx context.Context, id, fp string, caller Caller) (out Outcome, inFlight bool, err error) {
	err = s.withLock(ctx, id, func() error {
		now := s.now()
		rec, err := s.loadOrNil(ctx, id)
		if err != nil {
			return err
		}
		switch s.classify(rec, fp, now) {
		case stateFree:
			t, err := s.newTicket(id, fp, now, caller)
			if err != nil {
				return err
			}
			if err := s.put(ctx, id, t.pending()); err != nil {
				return err
			}
			out = Outcome{Kind: Proceed, Finish: t.finish, Abandon: t.abandon,
				Commit: t.commit, Provisional: t.provisional, Release: t.releaseCommitted}
		case stateReused:
			return ErrKeyReused
		case stateUnknown:
			return ErrOutcomeUnknown
		case stateDone:
			out = Outcome{Kind: Replay, Response: rec.Response.clone()}
		case stateInFlight:
			inFlight = true
		}
		return nil
	})
	return out, inFlight, err
}

// await polls the record without the lock until it is no longer in flight.
// settled means out is final (a Replay); otherwise the caller claims again,
// and the locked claim decides whatever await saw (absent, expired,
// abandoned, unreadable).
func (s *Store) await(ctx context.Context, id, fp string) (out Outcome, settled bool, err error) {
	tick := time.NewTicker(s.poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return Outcome{}, true, ctx.Err()
		case <-tick.C:
		}
		rec, err := s.load(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return Outcome{}, true, ctx.Err()
			}
			return Outcome{}, false, nil
		}
		switch s.classify(rec, fp, s.now()) {
		case stateInFlight:
			continue
		case stateDone:
			// A done record is never rewritten before it expires, so
			// reading it without the lock is safe.
			return Outcome{Kind: Replay, Response: rec.Response.clone()}, true, nil
		case stateUnknown:
			return Outcome{}, true, ErrOutcomeUnknown
		default:
			return Outcome{}, false, nil
		}
	}
}

// state is what a record means for a request with fingerprint fp.
type state int

const (
	stateFree     state = iota // absent, expired or abandoned: claim it
	stateReused                // another body used the key
	stateDone                  // finished (or provisional and stale): replay it
	stateInFlight              // live and young: wait
	stateUnknown               // committed and stale: the outcome is unknown
)

func (s *Store) classify(rec *record, fp string, now time.Time) state {
	if rec == nil {
		return stateFree
	}
	age := now.Sub(rec.Created)
	if age >= s.ttl {
		return stateFree
	}
	// The body is compared before abandonment: a key whose first request
	// crashed still belongs to that body until it expires, as a finished
	// one would.
	if rec.Fingerprint != fp {
		return stateReused
	}
	if rec.State == statusDone {
		return stateDone
	}
	if age < s.pendingTimeout {
		return stateInFlight
	}
	// Past PendingTimeout the request is taken as crashed. Only a record
	// whose work was certainly not done may be taken over.
	switch rec.State {
	case statusProvisional:
		return stateDone
	case statusCommitted:
		return stateUnknown
	}
	return stateFree
}
