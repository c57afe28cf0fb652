package connect

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
)

// Offboarding's part of the connect states (state.go): marks that
// refuse the states of offboarded users and tenants, and forgetting their
// pending redirect flows.

func forgottenUserMark(keys StateKeys, tenant, user string) string {
	return forgottenPrefix + "/u" + StorageKeyPart(keys.subjectHash(tenant, user))
}

func forgottenTenantMark(keys StateKeys, tenant string) string {
	return forgottenPrefix + "/t" + StorageKeyPart(keys.tenantHash(tenant))
}

// offboardedSince reports whether st's user or tenant was offboarded after
// st was issued (a state without an issue time counts as older). The marks
// are named as forgottenUserMark and forgottenTenantMark name them, from
// the hashes the state carries.
func (k *StateKeeper) offboardedSince(ctx context.Context, st *State) (bool, error) {
	marks := []string{forgottenPrefix + "/u" + StorageKeyPart(st.Subject)}
	if st.Tenant != "" {
		marks = append(marks, forgottenPrefix+"/t"+StorageKeyPart(st.Tenant))
	}
	for _, mark := range marks {
		data, err := k.storage.Load(ctx, mark)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("loading an offboarding mark: %w", err)
		}
		at, err := strconv.ParseInt(string(data), 10, 64)
		if err != nil || st.Issued <= at {
			return true, nil
		}
	}
	return false, nil
}

// Forget offboards a user (or, with user empty, a tenant) from the connect
// flows: states issued to them until now are refused from now on, on every
// gateway sharing the storage, and their pending redirect flows are
// deleted. It returns how many pending flows it deleted.
func (k *StateKeeper) Forget(ctx context.Context, tenant, user string) (int, error) {
	keys, err := k.Keys(ctx)
	if err != nil {
		return 0, err
	}
	mark := forgottenTenantMark(keys, tenant)
	if user != "" {
		mark = forgottenUserMark(keys, tenant, user)
	}
	if err := k.storage.Store(ctx, mark, []byte(strconv.FormatInt(k.now().UnixMilli(), 10))); err != nil {
		return 0, fmt.Errorf("storing the offboarding mark: %w", err)
	}
	names, err := k.storage.List(ctx, pendingStatesPrefix, false)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("listing pending connect states: %w", err)
	}
	subject, tenantHash := keys.subjectHash(tenant, user), keys.tenantHash(tenant)
	n := 0
	for _, name := range names {
		data, err := k.storage.Load(ctx, name)
		if err != nil {
			continue // spent meanwhile
		}
		st, err := decodeState(keys, string(data), k.now())
		if err != nil {
			continue // expired: the sweep's
		}
		if (user != "" && st.Subject == subject) || (user == "" && st.Tenant == tenantHash) {
			if err := k.storage.Delete(ctx, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return n, fmt.Errorf("deleting a pending connect state: %w", err)
			}
			n++
		}
	}
	return n, nil
}

// sweepForgotten deletes offboarding marks older than any state can live.
func (k *StateKeeper) sweepForgotten(ctx context.Context) {
	names, err := k.storage.List(ctx, forgottenPrefix, false)
	if err != nil {
		return
	}
	cutoff := k.now().Add(-MaxStateTTL)
	for _, name := range names {
		if ctx.Err() != nil {
			return
		}
		if info, err := k.storage.Stat(ctx, name); err == nil && info.Modified.Before(cutoff) {
			_ = k.storage.Delete(ctx, name)
		}
	}
}
