package proxy

import (
	"context"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"
)

// isolate finds the services whose part of the table the kernel refuses,
// checking (nft --check: nothing is applied, traffic sees nothing) the
// table with halves of the services until each failing half is one
// service. When the table without any service fails too, the fault is
// not an object's and nothing is returned.
func (p *Proxy) isolate(ctx context.Context, st *tableState) map[string]string {
	check := func(keys []string) error {
		m := newRuleset()
		m.merge(st.base, true)
		m.merge(st.sharedM, true)
		for _, k := range keys {
			m.merge(st.rulesOf(k), true)
		}
		tx := p.nft.NewTransaction()
		tx.Add(&knftables.Table{})
		tx.Delete(&knftables.Table{})
		m.Full(tx)
		return p.nft.Check(ctx, tx)
	}
	if check(nil) != nil {
		return nil
	}
	bad := map[string]string{}
	var search func([]string)
	search = func(keys []string) {
		if len(keys) == 0 {
			return
		}
		err := check(keys)
		switch {
		case err == nil:
		case len(keys) == 1:
			bad[keys[0]] = err.Error()
		default:
			search(keys[:len(keys)/2])
			search(keys[len(keys)/2:])
		}
	}
	search(sortedKeys(st.services))
	return bad
}

// skip leaves a service out of the table until it changes, and says so: an
// error log, a Warning Event on the Service, the skipped gauge. Every other
// service keeps syncing.
func (p *Proxy) skip(key, why string) {
	p.skipped[key] = why
	p.skippedGauge.Set(float64(len(p.skipped)))
	p.log.Error("service not programmed: the kernel refused its rules; skipped until it changes", "service", key, "err", why)
	ns, name, _ := strings.Cut(key, "/")
	if svc, err := p.services.Services(ns).Get(name); err == nil && p.Recorder != nil {
		msg := why
		if len(msg) > 512 {
			msg = msg[:512] + "..."
		}
		p.Recorder.Event(svc, corev1.EventTypeWarning, "ServiceNotProgrammed", msg)
	}
}
