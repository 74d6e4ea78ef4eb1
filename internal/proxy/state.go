package proxy

import "sigs.k8s.io/knftables"

// tableState is what the proxy table holds, kept per service so a
// partial sync recompiles only the services that changed: the fixed base,
// the shared chains and maps (per endpoint count and bucket), each
// service's own part, and how many services use each shared-set element.
type tableState struct {
	cfg      Config
	base     *Ruleset
	shared   *sharedDispatch
	sharedM  *Ruleset // every shared chain and map created so far
	services map[string]*serviceState
	refs     map[string]int // shared-set element key → services using it
	// raw: each service's ports before clashes over external addresses
	// are decided; claims decides them; conflicts says what each lost.
	raw       map[string][]ServicePort
	claims    addressClaims
	conflicts map[string]string
}

// serviceState keeps a service's ports (after address claims), not its
// compiled part: compiling is deterministic and cheap for one service, so
// the part is compiled again when needed rather than kept for 10,000s of
// services.
type serviceState struct {
	ports []ServicePort
}

// sharedChange is a shared-set element whose use count went to or from 0.
type sharedChange struct {
	elem    *knftables.Element
	removed bool
}

func newTableState(cfg Config) *tableState {
	st := &tableState{cfg: cfg, base: compileBase(cfg), sharedM: newRuleset(),
		services: map[string]*serviceState{}, refs: map[string]int{},
		raw: map[string][]ServicePort{}, claims: newAddressClaims(), conflicts: map[string]string{}}
	st.shared = newSharedDispatch(cfg, st.sharedM)
	return st
}

// set replaces one service's ports (none: it is gone) and recompiles it
// and every Service it contends with for an external address.
func (st *tableState) set(key string, ports []ServicePort) {
	for _, k := range st.register(key, ports) {
		st.compile(k)
	}
}

// setAll fills an empty state with every service (all claims first, so
// each address's holder is known before anything compiles) and returns
// the whole table.
func (st *tableState) setAll(all map[string][]ServicePort) *Ruleset {
	for key, ports := range all {
		st.claims.replace(key, nil, ports)
		st.raw[key] = ports
	}
	parts := newRuleset()
	for _, key := range sortedKeys(all) {
		if _, now, _ := st.compile(key); now != nil {
			parts.merge(now, true)
		}
	}
	m := newRuleset()
	m.merge(st.base, true)
	m.merge(st.sharedM, true)
	m.merge(parts, true)
	return m
}

// rulesOf compiles key's part of the table from its kept ports.
func (st *tableState) rulesOf(key string) *Ruleset {
	s := st.services[key]
	if s == nil {
		return newRuleset()
	}
	return compileService(st.cfg, s.ports, st.shared)
}

// register records key's ports and their claims, and returns the services
// to recompile: key, and every other claimant of an address whose claims
// changed (it may have won or lost it).
func (st *tableState) register(key string, ports []ServicePort) []string {
	changed := st.claims.replace(key, st.raw[key], ports)
	if len(ports) == 0 {
		delete(st.raw, key)
	} else {
		st.raw[key] = ports
	}
	return append([]string{key}, st.claims.others(key, changed)...)
}

// compile rebuilds one service's part from its ports, less the external
// addresses others hold, and returns its old and new parts (nil: none)
// and the shared-set elements that lost their last or got their first
// user. Shared chains and maps it needs for the first time are kept in
// st.sharedM (and in st.shared.created when a partial sync collects them).
func (st *tableState) compile(key string) (old, now *Ruleset, changes []sharedChange) {
	if st.services[key] != nil {
		old = st.rulesOf(key)
		for _, e := range old.elems {
			if sharedSets[e.Set] {
				k := elementKey(e)
				if st.refs[k]--; st.refs[k] == 0 {
					delete(st.refs, k)
					changes = append(changes, sharedChange{elem: e, removed: true})
				}
			}
		}
		delete(st.services, key)
	}
	ports, lost := st.claims.filter(key, st.raw[key])
	if lost == "" {
		delete(st.conflicts, key)
	} else {
		st.conflicts[key] = lost
	}
	if len(ports) == 0 {
		return old, nil, changes
	}
	now = compileService(st.cfg, ports, st.shared)
	for _, e := range now.elems {
		if sharedSets[e.Set] {
			k := elementKey(e)
			if st.refs[k]++; st.refs[k] == 1 {
				changes = append(changes, sharedChange{elem: e})
			}
		}
	}
	st.services[key] = &serviceState{ports: ports}
	return old, now, changes
}

// ruleset assembles the whole table.
func (st *tableState) ruleset() *Ruleset {
	m := newRuleset()
	m.merge(st.base, true)
	m.merge(st.sharedM, true)
	for _, key := range sortedKeys(st.services) {
		m.merge(st.rulesOf(key), true)
	}
	return m
}

// allPorts lists every programmed service port and counts endpoints.
func (st *tableState) allPorts() ([]ServicePort, int) {
	var ports []ServicePort
	eps := 0
	for _, s := range st.services {
		ports = append(ports, s.ports...)
		for _, sp := range s.ports {
			eps += len(sp.Endpoints)
		}
	}
	return ports, eps
}

// summary counts the programmed service ports and endpoints and lists the
// ports with a health check node port, without copying every port (at
// 10,000 services a copy is megabytes of garbage per sync).
func (st *tableState) summary() (ports, eps int, health []ServicePort) {
	for _, s := range st.services {
		ports += len(s.ports)
		for _, sp := range s.ports {
			eps += len(sp.Endpoints)
			if sp.ExternalLocal && sp.HealthCheckNodePort != 0 {
				health = append(health, sp)
			}
		}
	}
	return ports, eps, health
}

// update replaces the given services (no ports: gone) and returns the old
// and the new parts of the table they touch, so that newPart.Diff(tx,
// oldPart) is the partial sync, and their old and new ports.
func (st *tableState) update(changed map[string][]ServicePort) (oldPart, newPart *Ruleset, oldPorts, newPorts []ServicePort) {
	oldPart, newPart = newRuleset(), newRuleset()
	st.shared.created = newPart // shared chains and maps first needed now
	defer func() { st.shared.created = nil }()
	redo := map[string]bool{}
	for _, key := range sortedKeys(changed) {
		for _, k := range st.register(key, changed[key]) {
			redo[k] = true
		}
	}
	for _, key := range sortedKeys(redo) {
		if old := st.services[key]; old != nil {
			oldPorts = append(oldPorts, old.ports...)
		}
		oldRules, newRules, changes := st.compile(key)
		if oldRules != nil {
			oldPart.merge(oldRules, false)
		}
		for _, c := range changes {
			// A shared-set element that lost its last user goes; one that
			// got its first is added (both: no change).
			if c.removed {
				oldPart.Add(c.elem)
			} else {
				newPart.Add(c.elem)
			}
		}
		if now := st.services[key]; now != nil {
			newPart.merge(newRules, false)
			newPorts = append(newPorts, now.ports...)
		}
	}
	return oldPart, newPart, oldPorts, newPorts
}
