// Package jwks manages the partner signing keys: their lifecycle and
// rotation in shared storage, the public JWK Set Zapier verifies against,
// and minting the short-lived partner JWTs.
//
// A key's state follows from times alone. It is next (published, not
// signing) while now < ActivatesAt, active from ActivatesAt until its
// successor's ActivatesAt (its RetiresAt), then retired (published, not
// signing) until RetiresAt+Overlap (its DeletesAt), after which Maintain
// deletes it. Exactly one key signs at any instant: the one with the latest
// ActivatesAt <= now. Because every transition is published an Overlap
// ahead, a JWT in flight always finds its key in the JWKS.
package jwks

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// KeyState is a key's place in its lifecycle, derived from the clock.
type KeyState string

const (
	StateNext    KeyState = "next"    // published, signs from ActivatesAt
	StateActive  KeyState = "active"  // published and signing
	StateRetired KeyState = "retired" // published until DeletesAt, no longer signing
)

// Config configures a Manager. Zero values get the documented defaults.
type Config struct {
	Alg         string           // signing algorithm for new keys; default "ES256"
	Rotation    time.Duration    // scheduled rotation period; 0 disables scheduled rotation; must be >= Overlap
	Overlap     time.Duration    // next key published this long before it signs, retired key this long after; default 24h; must be >= TTL
	Issuer      string           // iss (required)
	Audience    string           // aud; default "connect.zapier.com" (a plain string claim, not an array)
	UserClaim   string           // default "sub"
	TenantClaim string           // default "org_id"
	TTL         time.Duration    // exp - iat, in whole seconds; default 5m; more than 5m or less than 1s is an error
	StorageKey  string           // default "zapier/keys.json"; also the storage lock name
	Now         func() time.Time // default time.Now (tests inject a fake clock)
	OnError     func(error)      // optional: receives Run's Maintain errors
}

// KeyInfo describes a published key. It never carries key material.
type KeyInfo struct {
	KID         string    `json:"kid"`
	Alg         string    `json:"alg"`
	State       KeyState  `json:"state"`
	CreatedAt   time.Time `json:"created_at"`
	ActivatesAt time.Time `json:"activates_at"`
	RetiresAt   time.Time `json:"retires_at,omitzero"` // zero while no successor is scheduled
	DeletesAt   time.Time `json:"deletes_at,omitzero"` // RetiresAt + Overlap
}

const maxTTL = 5 * time.Minute

// Manager owns the key set. All methods are safe for concurrent use.
type Manager struct {
	store Storage
	cfg   Config

	// Claims up to the user value, and between user and tenant values,
	// precomputed because they are the same for every JWT.
	claimsPrefix []byte
	tenantField  []byte

	// sem serialises Load/Maintain/Rotate within this process, so a slower
	// read of storage can never replace a newer set in memory.
	sem chan struct{}
	set atomic.Pointer[keySet] // read lock-free by Mint, JWKS, Keys

	cbMu      sync.Mutex
	callbacks []func()
	onRevoke  []func(kids []string)
}

// ErrUnknownKey is Revoke's error for a kid that is not published (never
// was, or was already revoked or deleted).
var ErrUnknownKey = errors.New("jwks: no published key has that kid")

// keySet is an immutable snapshot: the keys and their precomputed JWKS.
type keySet struct {
	keys    []*signingKey // sorted by ActivatesAt
	revoked []revokedKey
	body    []byte
	etag    string
}

// stored is the content of the key document that update works on.
type stored struct {
	keys    []*signingKey
	revoked []revokedKey
}

// NewManager validates cfg and fills defaults. It does no I/O; call Load.
func NewManager(store Storage, cfg Config) (*Manager, error) {
	if store == nil {
		return nil, errors.New("jwks: nil storage")
	}
	cfg.Alg = cmp.Or(cfg.Alg, "ES256")
	cfg.Audience = cmp.Or(cfg.Audience, "connect.zapier.com")
	cfg.UserClaim = cmp.Or(cfg.UserClaim, "sub")
	cfg.TenantClaim = cmp.Or(cfg.TenantClaim, "org_id")
	cfg.StorageKey = cmp.Or(cfg.StorageKey, "zapier/keys.json")
	cfg.TTL = cmp.Or(cfg.TTL, maxTTL)
	cfg.Overlap = cmp.Or(cfg.Overlap, 24*time.Hour)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch {
	case !ValidAlg(cfg.Alg):
		return nil, fmt.Errorf("jwks: unsupported alg %q (want one of %v)", cfg.Alg, Algorithms)
	case cfg.Issuer == "":
		return nil, errors.New("jwks: issuer is required")
	case cfg.TTL > maxTTL:
		return nil, fmt.Errorf("jwks: ttl %v exceeds %v", cfg.TTL, maxTTL)
	case cfg.TTL < time.Second:
		return nil, fmt.Errorf("jwks: ttl %v is below 1s", cfg.TTL)
	case cfg.Overlap < cfg.TTL:
		// A JWT signed just before its key retires must verify until it expires.
		return nil, fmt.Errorf("jwks: overlap %v is shorter than ttl %v", cfg.Overlap, cfg.TTL)
	case cfg.Rotation < 0:
		return nil, fmt.Errorf("jwks: negative rotation %v", cfg.Rotation)
	case cfg.Rotation > 0 && cfg.Rotation < cfg.Overlap:
		// The next key must be published an Overlap before it signs.
		return nil, fmt.Errorf("jwks: rotation %v is shorter than overlap %v", cfg.Rotation, cfg.Overlap)
	case cfg.UserClaim == cfg.TenantClaim:
		return nil, fmt.Errorf("jwks: user and tenant claim are both %q", cfg.UserClaim)
	case reservedClaim(cfg.UserClaim) || reservedClaim(cfg.TenantClaim):
		return nil, fmt.Errorf("jwks: user/tenant claim may not be iss, aud, iat, nbf or exp")
	}

	m := &Manager{store: store, cfg: cfg, sem: make(chan struct{}, 1)}
	m.claimsPrefix = append([]byte(`{"iss":`), jsonString(cfg.Issuer)...)
	m.claimsPrefix = append(append(m.claimsPrefix, `,"aud":`...), jsonString(cfg.Audience)...)
	m.claimsPrefix = append(append(append(m.claimsPrefix, ','), jsonString(cfg.UserClaim)...), ':')
	m.tenantField = append(append([]byte(","), jsonString(cfg.TenantClaim)...), ':')
	m.set.Store(newKeySet(nil, nil))
	return m, nil
}

func reservedClaim(name string) bool {
	switch name {
	case "iss", "aud", "iat", "nbf", "exp":
		return true
	}
	return false
}

func jsonString(s string) []byte {
	b, _ := json.Marshal(s) // cannot fail for a string
	return b
}

// now is the only clock reading; the monotonic part is dropped so times read
// back from storage compare exactly like the ones we wrote.
func (m *Manager) now() time.Time { return m.cfg.Now().Round(0).UTC() }

// OnChange registers f to be called (synchronously, after the new set is in
// effect, with no lock held) whenever the published key set, and so the
// JWKS body, changes: on the first Load and when Load, Maintain or Rotate
// adds or removes a key. Key state moving with the clock is not a change.
func (m *Manager) OnChange(f func()) {
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	m.callbacks = append(m.callbacks, f)
}

// OnRevoke registers f to be called (synchronously, with no lock held) with
// the kids revoked since this manager last read storage: by Revoke here, or
// by another gateway sharing the storage (seen by Load, Sync or Maintain).
// Revocations already in storage when the manager first loads are not
// reported: there is nothing minted from them in this manager's past.
func (m *Manager) OnRevoke(f func(kids []string)) {
	m.cbMu.Lock()
	defer m.cbMu.Unlock()
	m.onRevoke = append(m.onRevoke, f)
}

func (m *Manager) notify(c installed) {
	m.cbMu.Lock()
	cbs := append([]func(){}, m.callbacks...)
	rcbs := append([]func([]string){}, m.onRevoke...)
	m.cbMu.Unlock()
	if len(c.revoked) > 0 {
		for _, f := range rcbs {
			f(c.revoked)
		}
	}
	if c.changed {
		for _, f := range cbs {
			f()
		}
	}
}

// Load reads the key set from storage. If there is none it creates the first
// key (active at once, with the configured Alg) under the storage lock and
// persists it. Calling it again re-reads storage, which is how gateways
// sharing storage converge. A corrupt document is an error and is left as is.
func (m *Manager) Load(ctx context.Context) error {
	if err := m.acquire(ctx); err != nil {
		return err
	}
	c, err := m.load(ctx)
	<-m.sem
	m.notify(c)
	return err
}

func (m *Manager) load(ctx context.Context) (installed, error) {
	doc, err := m.read(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		err = m.locked(ctx, func() error {
			// Another gateway may have created the set while we waited.
			doc, err = m.read(ctx)
			if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			doc.keys, err = m.firstKey()
			if err != nil {
				return err
			}
			return m.write(ctx, doc)
		})
	}
	if err != nil {
		return installed{}, err
	}
	return m.install(doc), nil
}

func (m *Manager) firstKey() ([]*signingKey, error) {
	now := m.now()
	k, err := generateKey(m.cfg.Alg, now, now)
	if err != nil {
		return nil, err
	}
	return []*signingKey{k}, nil
}

// Sync re-reads the key set from storage without the storage lock (a
// storage writes each value atomically) and installs it: the cheap, frequent
// way for a gateway to pick up a rotation made by another. It changes
// nothing in storage; a missing document is left to Maintain, which
// re-persists what this gateway publishes. changed reports whether the
// published set changed.
func (m *Manager) Sync(ctx context.Context) (changed bool, err error) {
	if err := m.acquire(ctx); err != nil {
		return false, err
	}
	doc, err := m.read(ctx)
	var c installed
	switch {
	case err == nil:
		c = m.install(doc)
	case errors.Is(err, fs.ErrNotExist):
		err = nil
	}
	<-m.sem
	m.notify(c)
	return c.changed, err
}

// Maintain runs one pass under the storage lock: re-read storage, delete keys
// past DeletesAt, schedule a next key when rotation is due or the configured
// Alg differs from the active key's, persist if anything changed, and
// refresh the in-memory set. changed reports whether the published set
// changed, whether by this pass or by another gateway.
func (m *Manager) Maintain(ctx context.Context) (changed bool, err error) {
	return m.update(ctx, func(doc *stored, now time.Time) (bool, error) {
		keys := doc.keys
		dirty := false
		kept := keys[:0:0]
		for i, k := range keys {
			if i+1 < len(keys) && !now.Before(keys[i+1].activatesAt.Add(m.cfg.Overlap)) {
				dirty = true // past DeletesAt
				continue
			}
			kept = append(kept, k)
		}
		keys = kept
		doc.keys = keys

		if pendingKey(keys, now) != nil {
			// At most one scheduled key. A published next key is never
			// withdrawn, even with an outdated alg: it activates as planned
			// and a later pass schedules the configured alg.
			return dirty, nil
		}
		active := signerAt(keys, now)
		var at time.Time
		switch {
		case active.alg != m.cfg.Alg:
			at = now.Add(m.cfg.Overlap)
		case m.cfg.Rotation > 0 && !now.Before(active.activatesAt.Add(m.cfg.Rotation-m.cfg.Overlap)):
			at = active.activatesAt.Add(m.cfg.Rotation)
			if soonest := now.Add(m.cfg.Overlap); at.Before(soonest) {
				at = soonest
			}
		default:
			return dirty, nil
		}
		k, err := m.newKey(keys, now, at)
		if err != nil {
			return false, err
		}
		doc.keys = append(keys, k)
		return true, nil
	})
}

// Rotate rotates on demand, under the storage lock. With immediate false it
// returns the scheduled next key, creating one that activates at now+Overlap
// if there is none, so concurrent callers (on any gateway) get one key. With
// immediate true (key compromise) the scheduled next key, or a new key,
// signs from now on; the previous key retires now and stays published for
// Overlap so JWTs already issued still verify.
func (m *Manager) Rotate(ctx context.Context, immediate bool) (KeyInfo, error) {
	var kid string
	_, err := m.update(ctx, func(doc *stored, now time.Time) (bool, error) {
		keys := doc.keys
		next := pendingKey(keys, now)
		switch {
		case next != nil && !immediate:
			kid = next.kid
			return false, nil
		case next != nil: // promote it
			doc.keys = promote(keys, next, now)
			kid = next.kid
			return true, nil
		}
		at := now.Add(m.cfg.Overlap)
		if immediate {
			at = now
		}
		k, err := m.newKey(keys, now, at)
		if err != nil {
			return false, err
		}
		kid = k.kid
		doc.keys = append(keys, k)
		return true, nil
	})
	if err != nil {
		return KeyInfo{}, err
	}
	for _, info := range m.Keys() {
		if info.KID == kid {
			return info, nil
		}
	}
	return KeyInfo{}, fmt.Errorf("jwks: rotated key %s vanished", kid) // another pass deleted it; cannot happen within Overlap
}

// promote returns a copy of keys in which next signs from now.
func promote(keys []*signingKey, next *signingKey, now time.Time) []*signingKey {
	promoted := *next
	promoted.activatesAt = now
	keys = slices.Clone(keys)
	keys[slices.Index(keys, next)] = &promoted
	sortKeys(keys)
	return keys
}

// Revoke is for a private key that has leaked: under the storage lock it
// removes the key with kid from the stored set and from this manager's JWKS
// at once (not an Overlap later, unlike an immediate Rotate), and records
// the kid as revoked so that no gateway publishes it again. If the key was
// signing, the pending next key, or a new key, signs from now on. Other
// gateways sharing the storage drop it when they next read storage (Sync,
// Maintain or Load). JWTs it signed stop verifying for anyone who fetches
// the JWKS afresh. It returns the key that signs now; ErrUnknownKey when no
// published key has kid.
func (m *Manager) Revoke(ctx context.Context, kid string) (KeyInfo, error) {
	_, err := m.update(ctx, func(doc *stored, now time.Time) (bool, error) {
		i := slices.IndexFunc(doc.keys, func(k *signingKey) bool { return k.kid == kid })
		if i < 0 {
			return false, ErrUnknownKey
		}
		wasSigner := signerAt(doc.keys, now) == doc.keys[i]
		keys := slices.Delete(slices.Clone(doc.keys), i, i+1)
		if wasSigner || len(keys) == 0 {
			if next := pendingKey(keys, now); next != nil {
				keys = promote(keys, next, now)
			} else {
				k, err := m.newKey(keys, now, now)
				if err != nil {
					return false, err
				}
				keys = append(keys, k)
				sortKeys(keys)
			}
		}
		revoked := append(slices.Clone(doc.revoked), revokedKey{KID: kid, RevokedAt: now})
		if n := len(revoked) - maxRevoked; n > 0 {
			revoked = revoked[n:]
		}
		doc.keys, doc.revoked = keys, revoked
		return true, nil
	})
	if err != nil {
		return KeyInfo{}, err
	}
	for _, info := range m.Keys() {
		if info.State == StateActive {
			return info, nil
		}
	}
	return KeyInfo{}, errors.New("jwks: no key signs after the revocation") // cannot happen: Revoke leaves a signer
}

// Revoked returns the revoked kids recorded in storage as last read, oldest first.
func (m *Manager) Revoked() []string {
	revoked := m.set.Load().revoked
	kids := make([]string, len(revoked))
	for i, r := range revoked {
		kids[i] = r.KID
	}
	return kids
}

// newKey generates a key with the configured Alg whose kid is not in keys
// (thumbprints of fresh keys do not collide; this is belt and braces).
func (m *Manager) newKey(keys []*signingKey, now, activatesAt time.Time) (*signingKey, error) {
	for {
		k, err := generateKey(m.cfg.Alg, now, activatesAt)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(keys, func(o *signingKey) bool { return o.kid == k.kid }) {
			return k, nil
		}
	}
}

// update runs fn on the current stored set under the storage lock, persists
// its result if fn reports a change, and installs it in memory.
func (m *Manager) update(ctx context.Context, fn func(doc *stored, now time.Time) (bool, error)) (bool, error) {
	if err := m.acquire(ctx); err != nil {
		return false, err
	}
	var c installed
	err := m.locked(ctx, func() error {
		doc, err := m.read(ctx)
		dirty := false
		if errors.Is(err, fs.ErrNotExist) {
			// Storage lost the document: re-persist what we publish rather
			// than strand JWTs signed with it; create a key if we have none.
			cur := m.set.Load()
			dirty, doc = true, stored{keys: slices.Clone(cur.keys), revoked: cur.revoked}
			if len(doc.keys) == 0 {
				doc.keys, err = m.firstKey()
			} else {
				err = nil
			}
		}
		if err != nil {
			return err
		}
		modified, err := fn(&doc, m.now())
		if err != nil {
			return err
		}
		if dirty || modified {
			if err := m.write(ctx, doc); err != nil {
				return err
			}
		}
		c = m.install(doc)
		return nil
	})
	<-m.sem
	m.notify(c)
	return c.changed, err
}

func (m *Manager) acquire(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// locked runs fn holding the storage lock. Unlock ignores ctx cancellation
// so a cancelled caller does not leave the lock held.
func (m *Manager) locked(ctx context.Context, fn func() error) error {
	name := m.cfg.StorageKey
	if err := m.store.Lock(ctx, name); err != nil {
		return fmt.Errorf("jwks: lock %s: %w", name, err)
	}
	err := fn()
	if uerr := m.store.Unlock(context.WithoutCancel(ctx), name); uerr != nil {
		err = errors.Join(err, fmt.Errorf("jwks: unlock %s: %w", name, uerr))
	}
	return err
}

// read loads and decodes the stored set; a missing document matches fs.ErrNotExist.
func (m *Manager) read(ctx context.Context) (stored, error) {
	data, err := m.store.Load(ctx, m.cfg.StorageKey)
	if err != nil {
		return stored{}, fmt.Errorf("jwks: load %s: %w", m.cfg.StorageKey, err)
	}
	known := map[string]*signingKey{}
	for _, k := range m.set.Load().keys {
		known[k.kid] = k
	}
	keys, revoked, err := decodeDocument(data, known)
	if err != nil {
		return stored{}, fmt.Errorf("jwks: corrupt key document %s (left untouched): %v", m.cfg.StorageKey, err)
	}
	return stored{keys: keys, revoked: revoked}, nil
}

func (m *Manager) write(ctx context.Context, doc stored) error {
	data, err := encodeDocument(doc.keys, doc.revoked)
	if err == nil {
		err = m.store.Store(ctx, m.cfg.StorageKey, data)
	}
	if err != nil {
		return fmt.Errorf("jwks: store %s: %w", m.cfg.StorageKey, err)
	}
	return nil
}

// installed says what install changed: whether the JWKS changed, and which
// kids were revoked since the previous set (none on the first load).
type installed struct {
	changed bool
	revoked []string
}

// install makes doc the in-memory set.
func (m *Manager) install(doc stored) installed {
	set := newKeySet(doc.keys, doc.revoked)
	old := m.set.Swap(set)
	c := installed{changed: string(old.body) != string(set.body)}
	if len(old.keys) > 0 {
		for _, r := range set.revoked {
			if !slices.ContainsFunc(old.revoked, func(o revokedKey) bool { return o.KID == r.KID }) {
				c.revoked = append(c.revoked, r.KID)
			}
		}
	}
	return c
}

func newKeySet(keys []*signingKey, revoked []revokedKey) *keySet {
	jwks := struct {
		Keys []publicJWK `json:"keys"`
	}{Keys: make([]publicJWK, len(keys))}
	for i, k := range keys {
		jwks.Keys[i] = k.jwk
	}
	body, _ := json.Marshal(jwks) // plain strings: cannot fail
	sum := sha256.Sum256(body)
	return &keySet{keys: keys, revoked: revoked, body: body, etag: `"` + b64.EncodeToString(sum[:16]) + `"`}
}

// Run calls Maintain now and then every interval until ctx is done. With
// interval <= 0 it uses min(Overlap/4, 1m), at least 1s. Errors go to
// Config.OnError.
func (m *Manager) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = max(min(m.cfg.Overlap/4, time.Minute), time.Second)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := m.Maintain(ctx); err != nil && ctx.Err() == nil && m.cfg.OnError != nil {
			m.cfg.OnError(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// JWKS returns the published JWK Set and its strong ETag, both precomputed
// when the set last changed. Callers must not modify body.
func (m *Manager) JWKS() (body []byte, etag string) {
	s := m.set.Load()
	return s.body, s.etag
}

// Keys describes the published keys, sorted by ActivatesAt, with states as of now.
func (m *Manager) Keys() []KeyInfo {
	keys, now := m.set.Load().keys, m.now()
	signer := signerAt(keys, now)
	infos := make([]KeyInfo, len(keys))
	for i, k := range keys {
		info := KeyInfo{KID: k.kid, Alg: k.alg, CreatedAt: k.createdAt, ActivatesAt: k.activatesAt, State: StateActive}
		if i+1 < len(keys) {
			info.RetiresAt = keys[i+1].activatesAt
			info.DeletesAt = info.RetiresAt.Add(m.cfg.Overlap)
		}
		switch {
		case k == signer:
		case now.Before(k.activatesAt):
			info.State = StateNext
		default:
			info.State = StateRetired
		}
		infos[i] = info
	}
	return infos
}

// signerAt returns the key that signs at now: the latest with ActivatesAt <=
// now. If none has activated yet (this gateway's clock is behind the one
// that created the set) the earliest key signs: it is published, and
// refusing to sign would be worse.
func signerAt(keys []*signingKey, now time.Time) *signingKey {
	for i := len(keys) - 1; i >= 0; i-- {
		if !keys[i].activatesAt.After(now) {
			return keys[i]
		}
	}
	if len(keys) > 0 {
		return keys[0]
	}
	return nil
}

// pendingKey returns the earliest key that has not activated yet, or nil.
func pendingKey(keys []*signingKey, now time.Time) *signingKey {
	for _, k := range keys {
		if k.activatesAt.After(now) {
			return k
		}
	}
	return nil
}
