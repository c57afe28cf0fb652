package connect

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// Flow is the kind of flow a state was issued for; a state issued for one
// is refused by the others.
type Flow string

const (
	FlowPopup    Flow = "popup"    // POST complete from connect.js
	FlowRedirect Flow = "redirect" // GET callback from the Connect UI
	FlowMCP      Flow = "mcp"      // the MCP authorize flow
)

const (
	// StateKeyStorageKey holds the key that signs connect states. It lives in
	// Caddy storage so every gateway sharing the storage can verify a state
	// another one issued.
	StateKeyStorageKey = "zapier/connect-state.key"
	// usedStatesPrefix records spent state ids until they expire, so a
	// replay fails on every gateway sharing the storage.
	usedStatesPrefix = "zapier/connect/used-states"
	// pendingStatesPrefix keeps each open redirect flow's signed state by
	// its id until it is spent or expires: Zapier's success callback does
	// not echo the state, so the callback finds it from the id in the
	// browser's flow cookie.
	pendingStatesPrefix = "zapier/connect/pending-states"
	// forgottenPrefix marks offboarded users (u<subject>) and tenants
	// (t<tenant hash>) with the time they were offboarded: a state issued
	// to them before that is refused on every gateway sharing the storage.
	// Marks go after MaxStateTTL, when no such state can be open.
	forgottenPrefix = "zapier/connect/forgotten"
	DefaultStateTTL = 10 * time.Minute
	MaxStateTTL     = 24 * time.Hour
	maxStateLen     = 8 << 10
	stateVersion    = "v1"
)

// State is what a connect flow carries from its start to its
// completion. It is signed, never encrypted: it holds no secret. The user
// appears only as a keyed hash.
type State struct {
	ID        string `json:"id"`  // random; the single-use key
	Subject   string `json:"sub"` // keyed hash of (tenant, user)
	App       string `json:"app"` // Connect's implementation id
	AppUUID   string `json:"app_uuid"`
	ReturnTo  string `json:"rt,omitempty"`
	Flow      Flow   `json:"flow"` // popup or redirect
	NonceHash string `json:"nh"`   // SHA-256 of the browser cookie's nonce
	Expires   int64  `json:"exp"`  // Unix milliseconds
	// Tenant is a keyed hash of the tenant, and Issued the issue time
	// (Unix milliseconds), for offboarding (forgottenPrefix). States
	// issued before they were added have neither.
	Tenant string `json:"ten,omitempty"`
	Issued int64  `json:"iat,omitempty"`
}

// StateError is a refused state; Reason is for logs and the API error's
// message.
type StateError struct{ Reason string }

func (e *StateError) Error() string { return "connect state refused: " + e.Reason }

// RefuseState is a *StateError: callers refuse a state for their own
// reasons (another app, no flow for the service) the way the keeper does.
func RefuseState(reason string) error { return &StateError{reason} }

// StateKeys are derived from the stored master key, one per purpose.
type StateKeys struct {
	mac     []byte // signs states
	subject []byte // hashes identities into states
	names   []byte // hashes identities into storage names
}

// NamesKey is the key that hashes identities into storage names, and
// seals what storage keeps about them, so that reading the storage without
// it does not tell who is connected.
func (k StateKeys) NamesKey() []byte { return k.names }

func deriveStateKeys(master []byte) StateKeys {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, master)
		m.Write([]byte("caddy-zapier connect " + label))
		return m.Sum(nil)
	}
	return StateKeys{mac: derive("state mac"), subject: derive("subject"), names: derive("storage names")}
}

// subjectHash binds a state to an identity without putting the identity in
// it. Identity values cannot contain NUL, so the join is unambiguous.
func (k StateKeys) subjectHash(tenant, user string) string {
	m := hmac.New(sha256.New, k.subject)
	m.Write([]byte(tenant))
	m.Write([]byte{0})
	m.Write([]byte(user))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// tenantHash names a tenant in states and offboarding marks. The label
// keeps it apart from subjectHash (identity values cannot contain NUL).
func (k StateKeys) tenantHash(tenant string) string {
	m := hmac.New(sha256.New, k.subject)
	m.Write([]byte("\x00tenant\x00"))
	m.Write([]byte(tenant))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (k StateKeys) sign(payload string) string {
	m := hmac.New(sha256.New, k.mac)
	m.Write([]byte(stateVersion + "." + payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// encodeState renders v1.<payload>.<mac>, all base64url.
func encodeState(k StateKeys, st *State) (string, error) {
	data, err := json.Marshal(st)
	if err != nil {
		return "", fmt.Errorf("encoding state: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(data)
	return stateVersion + "." + payload + "." + k.sign(payload), nil
}

// decodeState verifies a state's signature and expiry. It is total: any
// input yields a state or a *StateError, never a panic.
func decodeState(k StateKeys, raw string, now time.Time) (*State, error) {
	if raw == "" {
		return nil, RefuseState("missing")
	}
	if len(raw) > maxStateLen {
		return nil, RefuseState("malformed")
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || parts[0] != stateVersion {
		return nil, RefuseState("malformed")
	}
	mac, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	if err != nil {
		return nil, RefuseState("malformed")
	}
	want, _ := base64.RawURLEncoding.DecodeString(k.sign(parts[1]))
	if !hmac.Equal(mac, want) {
		return nil, RefuseState("bad signature")
	}
	data, err := base64.RawURLEncoding.Strict().DecodeString(parts[1])
	if err != nil {
		return nil, RefuseState("malformed")
	}
	st := new(State)
	if err := json.Unmarshal(data, st); err != nil {
		return nil, RefuseState("malformed")
	}
	if st.ID == "" || st.Subject == "" || st.App == "" || st.AppUUID == "" || st.NonceHash == "" ||
		(st.Flow != FlowPopup && st.Flow != FlowRedirect && st.Flow != FlowMCP) {
		return nil, RefuseState("malformed")
	}
	if now.UnixMilli() >= st.Expires {
		return nil, RefuseState("expired")
	}
	return st, nil
}

// StateKeeper issues, verifies and spends connect states, with its key and
// its record of spent states in storage shared by every gateway. It does
// not sweep by itself: whoever owns its lifetime calls Sweep.
type StateKeeper struct {
	storage certmagic.Storage
	ttl     time.Duration
	now     func() time.Time

	mu   sync.Mutex
	keys *StateKeys
}

// NewStateKeeper keeps states in s; they live for ttl. A keeper used only
// for its Keys may have ttl 0.
func NewStateKeeper(s certmagic.Storage, ttl time.Duration) *StateKeeper {
	return &StateKeeper{storage: s, ttl: ttl, now: time.Now}
}

// TTL is how long the states this keeper issues live.
func (k *StateKeeper) TTL() time.Duration { return k.ttl }

// Keys loads the master key, creating it under the storage lock on
// first use, so gateways sharing the storage agree on one key.
func (k *StateKeeper) Keys(ctx context.Context) (StateKeys, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys != nil {
		return *k.keys, nil
	}
	master, err := k.loadMaster(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		if err := k.storage.Lock(ctx, StateKeyStorageKey); err != nil {
			return StateKeys{}, fmt.Errorf("locking the connect state key: %w", err)
		}
		defer func() { _ = k.storage.Unlock(context.WithoutCancel(ctx), StateKeyStorageKey) }()
		master, err = k.loadMaster(ctx)
		if errors.Is(err, fs.ErrNotExist) {
			master = make([]byte, 32)
			if _, err := rand.Read(master); err != nil {
				return StateKeys{}, fmt.Errorf("generating the connect state key: %w", err)
			}
			err = k.storage.Store(ctx, StateKeyStorageKey, []byte(base64.StdEncoding.EncodeToString(master)))
		}
	}
	if err != nil {
		return StateKeys{}, fmt.Errorf("loading the connect state key: %w", err)
	}
	keys := deriveStateKeys(master)
	k.keys = &keys
	return keys, nil
}

func (k *StateKeeper) loadMaster(ctx context.Context) ([]byte, error) {
	data, err := k.storage.Load(ctx, StateKeyStorageKey)
	if err != nil {
		return nil, err
	}
	master, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(master) < 32 {
		return nil, errors.New("the stored connect state key is malformed")
	}
	return master, nil
}

// Issue fills in the state's id, expiry and browser binding and signs it.
// It returns the state and the nonce for the browser's cookie.
func (k *StateKeeper) Issue(ctx context.Context, st *State, tenant, user string) (state, nonce string, err error) {
	keys, err := k.Keys(ctx)
	if err != nil {
		return "", "", err
	}
	id := make([]byte, 16)
	n := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return "", "", fmt.Errorf("generating a state id: %w", err)
	}
	if _, err := rand.Read(n); err != nil {
		return "", "", fmt.Errorf("generating a nonce: %w", err)
	}
	nonce = base64.RawURLEncoding.EncodeToString(n)
	st.ID = hex.EncodeToString(id)
	st.Subject = keys.subjectHash(tenant, user)
	st.Tenant = keys.tenantHash(tenant)
	st.NonceHash = nonceHash(nonce)
	now := k.now()
	st.Issued = now.UnixMilli()
	st.Expires = now.Add(k.ttl).UnixMilli()
	state, err = encodeState(keys, st)
	if err != nil {
		return "", "", err
	}
	if st.Flow == FlowRedirect {
		if err := k.storage.Store(ctx, pendingStatesPrefix+"/"+st.ID, []byte(state)); err != nil {
			return "", "", fmt.Errorf("storing the connect state: %w", err)
		}
	}
	return state, nonce, nil
}

func nonceHash(nonce string) string {
	sum := sha256.Sum256([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Open verifies a state for the caller: signature, expiry, flow, identity
// and the browser's nonce cookie. It does not spend it.
func (k *StateKeeper) Open(ctx context.Context, r *http.Request, raw string, flow Flow, tenant, user string) (*State, error) {
	keys, err := k.Keys(ctx)
	if err != nil {
		return nil, err
	}
	st, err := decodeState(keys, raw, k.now())
	if err != nil {
		return nil, err
	}
	if err := k.check(r, keys, st, flow, tenant, user); err != nil {
		return nil, err
	}
	return st, nil
}

// check binds an opened state to the request: the flow, the identity and
// the browser's nonce cookie.
func (k *StateKeeper) check(r *http.Request, keys StateKeys, st *State, flow Flow, tenant, user string) error {
	if st.Flow != flow {
		return RefuseState("issued for the " + string(st.Flow) + " flow")
	}
	if subtle.ConstantTimeCompare([]byte(st.Subject), []byte(keys.subjectHash(tenant, user))) != 1 {
		return RefuseState("issued to another user")
	}
	nonce, ok := FlowNonce(r, st.ID)
	if !ok || subtle.ConstantTimeCompare([]byte(nonceHash(nonce)), []byte(st.NonceHash)) != 1 {
		return RefuseState("not started in this browser")
	}
	return nil
}

// OpenPending returns the redirect flows this browser has open for the
// caller, oldest first, from the state ids in its flow cookie: each must be
// stored as pending (so unspent), verify, be unexpired and the caller's,
// and match the cookie's nonce. With none, the error says why the last
// cookie entry was refused.
func (k *StateKeeper) OpenPending(ctx context.Context, r *http.Request, tenant, user string) ([]*State, error) {
	keys, err := k.Keys(ctx)
	if err != nil {
		return nil, err
	}
	var out []*State
	why := RefuseState("no connect flow was started in this browser")
	for _, e := range FlowCookieEntries(r) {
		data, err := k.storage.Load(ctx, pendingStatesPrefix+"/"+e.ID)
		if errors.Is(err, fs.ErrNotExist) {
			why = RefuseState("already used or unknown")
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("loading a connect state: %w", err)
		}
		st, err := decodeState(keys, string(data), k.now())
		if err == nil && st.ID != e.ID {
			err = RefuseState("malformed")
		}
		if err == nil {
			err = k.check(r, keys, st, FlowRedirect, tenant, user)
		}
		if err != nil {
			why = err
			continue
		}
		out = append(out, st)
	}
	if len(out) == 0 {
		return nil, why
	}
	return out, nil
}

// Spend marks a state used. Under the storage lock, so of two gateways
// spending the same state at once exactly one succeeds.
func (k *StateKeeper) Spend(ctx context.Context, st *State) error {
	lock := "zapier_connect_state_" + st.ID
	if err := k.storage.Lock(ctx, lock); err != nil {
		return fmt.Errorf("locking the connect state: %w", err)
	}
	defer func() { _ = k.storage.Unlock(context.WithoutCancel(ctx), lock) }()
	key := usedStatesPrefix + "/" + st.ID
	if k.storage.Exists(ctx, key) {
		return RefuseState("already used")
	}
	if forgotten, err := k.offboardedSince(ctx, st); err != nil {
		return err
	} else if forgotten {
		return RefuseState("its user was offboarded")
	}
	if err := k.storage.Store(ctx, key, []byte(strconv.FormatInt(st.Expires, 10))); err != nil {
		return fmt.Errorf("recording the connect state as used: %w", err)
	}
	if err := k.storage.Delete(ctx, pendingStatesPrefix+"/"+st.ID); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forgetting the spent connect state: %w", err)
	}
	return nil
}

// Sweep deletes the records of spent states that have expired (and so can
// no longer be replayed anyway), the pending states of flows never
// finished, and offboarding marks older than any state can live.
func (k *StateKeeper) Sweep(ctx context.Context) {
	k.sweepUsed(ctx)
	k.sweepPending(ctx)
	k.sweepForgotten(ctx) // state_forget.go
}

// sweepPending deletes the pending states of flows never finished once
// they have expired.
func (k *StateKeeper) sweepPending(ctx context.Context) {
	keys, err := k.Keys(ctx)
	if err != nil {
		return
	}
	names, err := k.storage.List(ctx, pendingStatesPrefix, false)
	if err != nil {
		return
	}
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		data, err := k.storage.Load(ctx, name)
		if err != nil {
			continue
		}
		var serr *StateError
		if _, err := decodeState(keys, string(data), k.now()); errors.As(err, &serr) {
			_ = k.storage.Delete(ctx, name)
		}
	}
}

func (k *StateKeeper) sweepUsed(ctx context.Context) {
	keys, err := k.storage.List(ctx, usedStatesPrefix, false)
	if err != nil {
		return
	}
	now := k.now().UnixMilli()
	for _, key := range keys {
		if ctx.Err() != nil {
			return
		}
		data, err := k.storage.Load(ctx, key)
		if err != nil {
			continue
		}
		exp, err := strconv.ParseInt(string(data), 10, 64)
		if err == nil && exp > now {
			continue
		}
		_ = k.storage.Delete(ctx, key)
	}
}

// NamesKey is the key that names identities in storage: the keeper is the
// gateway.NamesKeySource every store's gateway.Namespace is built on.
func (k *StateKeeper) NamesKey(ctx context.Context) ([]byte, error) {
	keys, err := k.Keys(ctx)
	if err != nil {
		return nil, err
	}
	return keys.NamesKey(), nil
}
