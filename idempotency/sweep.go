package idempotency

import (
	"context"
	"errors"
	"path"
)

// Sweep deletes the records older than the TTL, and corrupt ones (which
// would never expire), and returns how many it deleted. Expired records are
// harmless, as Begin treats them as absent; Sweep only reclaims their space,
// so run it periodically (e.g. hourly) from one or every process.
//
// A record that cannot be swept is skipped and its error joined to the
// returned one; Sweep stops early only when ctx ends.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	keys, err := s.storage.List(ctx, s.prefix, false)
	if isNotExist(err) {
		return 0, nil // nothing stored yet
	}
	if err != nil {
		return 0, err
	}
	var (
		n    int
		errs []error
	)
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return n, errors.Join(append(errs, err)...)
		}
		id := path.Base(k)
		if !isHexSHA256(id) || k != s.storageKey(id) {
			continue // not a record of ours
		}
		// Look without the lock first: most records are alive, and taking
		// each one's lock would contend with live requests for nothing.
		if !s.sweepable(s.load(ctx, id)) {
			continue
		}
		deleted, err := s.sweepOne(ctx, id)
		if err != nil {
			errs = append(errs, err)
		}
		if deleted {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// sweepOne deletes record id if, under its lock, it is still sweepable.
func (s *Store) sweepOne(ctx context.Context, id string) (deleted bool, err error) {
	err = s.withLock(ctx, id, func() error {
		if !s.sweepable(s.load(ctx, id)) {
			return nil // claimed anew since we looked
		}
		if err := s.storage.Delete(ctx, s.storageKey(id)); err != nil {
			return err
		}
		deleted = true
		return nil
	})
	return deleted, err
}

func (s *Store) sweepable(rec *record, err error) bool {
	if err != nil {
		return errors.Is(err, errCorrupt)
	}
	return s.now().Sub(rec.Created) >= s.ttl
}

// ForgetWhere deletes every record whose caller match accepts (by the
// Subject and Sealed its Begin was given; records written without them
// are never matched) and returns how many it deleted and how many it could
// not. It is idempotent: running it again deletes what failed before.
// Records of another format version are left alone.
func (s *Store) ForgetWhere(ctx context.Context, match func(subject, sealed string) bool) (deleted, failed int, err error) {
	keys, err := s.storage.List(ctx, s.prefix, false)
	if isNotExist(err) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	var errs []error
	matches := func(rec *record, err error) bool {
		return err == nil && (rec.Subject != "" || rec.Sealed != "") && match(rec.Subject, rec.Sealed)
	}
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return deleted, failed, errors.Join(append(errs, err)...)
		}
		id := path.Base(k)
		if !isHexSHA256(id) || k != s.storageKey(id) {
			continue
		}
		if !matches(s.load(ctx, id)) {
			continue
		}
		err := s.withLock(ctx, id, func() error {
			if !matches(s.load(ctx, id)) {
				return nil
			}
			if err := s.storage.Delete(ctx, s.storageKey(id)); err != nil && !isNotExist(err) {
				return err
			}
			deleted++
			return nil
		})
		if err != nil {
			failed++
			errs = append(errs, err)
		}
	}
	return deleted, failed, errors.Join(errs...)
}
