package caddymodule

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
	"github.com/zapgate/caddy-zapier/connect"
)

const (
	// stateKeyStorageKey holds the key that signs connect states. It lives in
	// Caddy storage so every gateway sharing the storage can verify a state
	// another one issued.
	stateKeyStorageKey = "zapier/connect-state.key"
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
	// Marks go after maxStateTTL, when no such state can be open.
	forgottenPrefix = "zapier/connect/forgotten"
	defaultStateTTL = 10 * time.Minute
	maxStateTTL     = 24 * time.Hour
	maxStateLen     = 8 << 10
	stateVersion    = "v1"
)

// connectState is what a connect flow carries from its start to its
// completion. It is signed, never encrypted: it holds no secret. The user
// appears only as a keyed hash.
type connectState struct {
	ID        string      `json:"id"`  // random; the single-use key
	Subject   string      `json:"sub"` // keyed hash of (tenant, user)
	App       string      `json:"app"` // Connect's implementation id
	AppUUID   string      `json:"app_uuid"`
	ReturnTo  string      `json:"rt,omitempty"`
	Flow      connectFlow `json:"flow"` // popup or redirect
	NonceHash string      `json:"nh"`   // SHA-256 of the browser cookie's nonce
	Expires   int64       `json:"exp"`  // Unix milliseconds
	// Tenant is a keyed hash of the tenant, and Issued the issue time
	// (Unix milliseconds), for offboarding (forgottenPrefix). States
	// issued before they were added have neither.
	Tenant string `json:"ten,omitempty"`
	Issued int64  `json:"iat,omitempty"`
}

// stateError is a refused state; reason is for logs and the message.
type stateError struct{ reason string }

func (e *stateError) Error() string { return "connect state refused: " + e.reason }

func refuseState(reason string) error { return &stateError{reason} }

// stateKeys are derived from the stored master key, one per purpose.
type stateKeys struct {
	mac     []byte // signs states
	subject []byte // hashes identities into states
	names   []byte // hashes identities into storage names (storage_names.go)
}

func deriveStateKeys(master []byte) stateKeys {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, master)
		m.Write([]byte("caddy-zapier connect " + label))
		return m.Sum(nil)
	}
	return stateKeys{mac: derive("state mac"), subject: derive("subject"), names: derive("storage names")}
}

// subjectHash binds a state to an identity without putting the identity in
// it. Identity values cannot contain NUL, so the join is unambiguous.
func (k stateKeys) subjectHash(tenant, user string) string {
	m := hmac.New(sha256.New, k.subject)
	m.Write([]byte(tenant))
	m.Write([]byte{0})
	m.Write([]byte(user))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// tenantHash names a tenant in states and offboarding marks. The label
// keeps it apart from subjectHash (identity values cannot contain NUL).
func (k stateKeys) tenantHash(tenant string) string {
	m := hmac.New(sha256.New, k.subject)
	m.Write([]byte("\x00tenant\x00"))
	m.Write([]byte(tenant))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (k stateKeys) sign(payload string) string {
	m := hmac.New(sha256.New, k.mac)
	m.Write([]byte(stateVersion + "." + payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// encodeState renders v1.<payload>.<mac>, all base64url.
func encodeState(k stateKeys, st *connectState) (string, error) {
	data, err := json.Marshal(st)
	if err != nil {
		return "", fmt.Errorf("encoding state: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(data)
	return stateVersion + "." + payload + "." + k.sign(payload), nil
}

// decodeState verifies a state's signature and expiry. It is total: any
// input yields a state or a *stateError, never a panic.
func decodeState(k stateKeys, raw string, now time.Time) (*connectState, error) {
	if raw == "" {
		return nil, refuseState("missing")
	}
	if len(raw) > maxStateLen {
		return nil, refuseState("malformed")
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 || parts[0] != stateVersion {
		return nil, refuseState("malformed")
	}
	mac, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	if err != nil {
		return nil, refuseState("malformed")
	}
	want, _ := base64.RawURLEncoding.DecodeString(k.sign(parts[1]))
	if !hmac.Equal(mac, want) {
		return nil, refuseState("bad signature")
	}
	data, err := base64.RawURLEncoding.Strict().DecodeString(parts[1])
	if err != nil {
		return nil, refuseState("malformed")
	}
	st := new(connectState)
	if err := json.Unmarshal(data, st); err != nil {
		return nil, refuseState("malformed")
	}
	if st.ID == "" || st.Subject == "" || st.App == "" || st.AppUUID == "" || st.NonceHash == "" ||
		(st.Flow != connectFlowPopup && st.Flow != connectFlowRedirect && st.Flow != connectFlowMCP) {
		return nil, refuseState("malformed")
	}
	if now.UnixMilli() >= st.Expires {
		return nil, refuseState("expired")
	}
	return st, nil
}

// stateKeeper issues, verifies and spends connect states, with its key and
// its record of spent states in Caddy storage.
type stateKeeper struct {
	storage certmagic.Storage
	ttl     time.Duration
	now     func() time.Time
	// bg bounds background sweeps; it ends with the config.
	bg context.Context

	mu   sync.Mutex
	keys *stateKeys

	sweeper sweeper
}

func newStateKeeper(bg context.Context, s certmagic.Storage, ttl time.Duration) *stateKeeper {
	return &stateKeeper{storage: s, ttl: ttl, now: time.Now, bg: bg}
}

// stateKeys loads the master key, creating it under the storage lock on
// first use, so gateways sharing the storage agree on one key.
func (k *stateKeeper) stateKeys(ctx context.Context) (stateKeys, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys != nil {
		return *k.keys, nil
	}
	master, err := k.loadMaster(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		if err := k.storage.Lock(ctx, stateKeyStorageKey); err != nil {
			return stateKeys{}, fmt.Errorf("locking the connect state key: %w", err)
		}
		defer func() { _ = k.storage.Unlock(context.WithoutCancel(ctx), stateKeyStorageKey) }()
		master, err = k.loadMaster(ctx)
		if errors.Is(err, fs.ErrNotExist) {
			master = make([]byte, 32)
			if _, err := rand.Read(master); err != nil {
				return stateKeys{}, fmt.Errorf("generating the connect state key: %w", err)
			}
			err = k.storage.Store(ctx, stateKeyStorageKey, []byte(base64.StdEncoding.EncodeToString(master)))
		}
	}
	if err != nil {
		return stateKeys{}, fmt.Errorf("loading the connect state key: %w", err)
	}
	keys := deriveStateKeys(master)
	k.keys = &keys
	return keys, nil
}

func (k *stateKeeper) loadMaster(ctx context.Context) ([]byte, error) {
	data, err := k.storage.Load(ctx, stateKeyStorageKey)
	if err != nil {
		return nil, err
	}
	master, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(master) < 32 {
		return nil, errors.New("the stored connect state key is malformed")
	}
	return master, nil
}

// issue fills in the state's id, expiry and browser binding and signs it.
// It returns the state and the nonce for the browser's cookie.
func (k *stateKeeper) issue(ctx context.Context, st *connectState, tenant, user string) (state, nonce string, err error) {
	keys, err := k.stateKeys(ctx)
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
	if st.Flow == connectFlowRedirect {
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

// open verifies a state for the caller: signature, expiry, flow, identity
// and the browser's nonce cookie. It does not spend it.
func (k *stateKeeper) open(ctx context.Context, r *http.Request, raw string, flow connectFlow, tenant, user string) (*connectState, error) {
	keys, err := k.stateKeys(ctx)
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
func (k *stateKeeper) check(r *http.Request, keys stateKeys, st *connectState, flow connectFlow, tenant, user string) error {
	if st.Flow != flow {
		return refuseState("issued for the " + string(st.Flow) + " flow")
	}
	if subtle.ConstantTimeCompare([]byte(st.Subject), []byte(keys.subjectHash(tenant, user))) != 1 {
		return refuseState("issued to another user")
	}
	nonce, ok := connect.FlowNonce(r, st.ID)
	if !ok || subtle.ConstantTimeCompare([]byte(nonceHash(nonce)), []byte(st.NonceHash)) != 1 {
		return refuseState("not started in this browser")
	}
	return nil
}

// openPending returns the redirect flows this browser has open for the
// caller, oldest first, from the state ids in its flow cookie: each must be
// stored as pending (so unspent), verify, be unexpired and the caller's,
// and match the cookie's nonce. With none, the error says why the last
// cookie entry was refused.
func (k *stateKeeper) openPending(ctx context.Context, r *http.Request, tenant, user string) ([]*connectState, error) {
	keys, err := k.stateKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []*connectState
	why := refuseState("no connect flow was started in this browser")
	for _, e := range connect.FlowCookieEntries(r) {
		data, err := k.storage.Load(ctx, pendingStatesPrefix+"/"+e.ID)
		if errors.Is(err, fs.ErrNotExist) {
			why = refuseState("already used or unknown")
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("loading a connect state: %w", err)
		}
		st, err := decodeState(keys, string(data), k.now())
		if err == nil && st.ID != e.ID {
			err = refuseState("malformed")
		}
		if err == nil {
			err = k.check(r, keys, st, connectFlowRedirect, tenant, user)
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

// spend marks a state used. Under the storage lock, so of two gateways
// spending the same state at once exactly one succeeds.
func (k *stateKeeper) spend(ctx context.Context, st *connectState) error {
	lock := "zapier_connect_state_" + st.ID
	if err := k.storage.Lock(ctx, lock); err != nil {
		return fmt.Errorf("locking the connect state: %w", err)
	}
	defer func() { _ = k.storage.Unlock(context.WithoutCancel(ctx), lock) }()
	key := usedStatesPrefix + "/" + st.ID
	if k.storage.Exists(ctx, key) {
		return refuseState("already used")
	}
	if forgotten, err := k.offboardedSince(ctx, st); err != nil {
		return err
	} else if forgotten {
		return refuseState("its user was offboarded")
	}
	if err := k.storage.Store(ctx, key, []byte(strconv.FormatInt(st.Expires, 10))); err != nil {
		return fmt.Errorf("recording the connect state as used: %w", err)
	}
	if err := k.storage.Delete(ctx, pendingStatesPrefix+"/"+st.ID); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forgetting the spent connect state: %w", err)
	}
	k.maybeSweep()
	return nil
}

// maybeSweep deletes the records of spent states that have expired (and so
// can no longer be replayed anyway), at most once per state TTL per
// gateway, in the background.
func (k *stateKeeper) maybeSweep() {
	k.sweeper.maybe(k.bg, k.now(), k.ttl, k.sweep)
}

func (k *stateKeeper) sweep(ctx context.Context) {
	k.sweepUsed(ctx)
	k.sweepPending(ctx)
	k.sweepForgotten(ctx) // connect_forget.go
}

// sweepPending deletes the pending states of flows never finished once
// they have expired.
func (k *stateKeeper) sweepPending(ctx context.Context) {
	keys, err := k.stateKeys(ctx)
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
		var serr *stateError
		if _, err := decodeState(keys, string(data), k.now()); errors.As(err, &serr) {
			_ = k.storage.Delete(ctx, name)
		}
	}
}

func (k *stateKeeper) sweepUsed(ctx context.Context) {
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
