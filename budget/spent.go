package budget

import "sync/atomic"

// spentHook holds the function told of every grant.
type spentHook struct {
	f atomic.Pointer[func(tenant string, units int)]
}

// OnSpent sets f to hear of every grant: the tenant it was made for and
// how many requests to Zapier it allows (usage counts the calls each
// tenant spends). A later call replaces f (the budget outlives a config
// reload; the newest config's hook counts); nil removes it. f must not
// block.
func (b *Budget) OnSpent(f func(tenant string, units int)) {
	if f == nil {
		b.spent.f.Store(nil)
		return
	}
	b.spent.f.Store(&f)
}

func (b *Budget) reportSpent(req Request, err error) error {
	if err == nil {
		if f := b.spent.f.Load(); f != nil {
			(*f)(req.Tenant, max(req.Units, 1))
		}
	}
	return err
}
