package netpol

import (
	"net/netip"
	"slices"
)

// ipRange is an inclusive range of addresses of one family.
type ipRange struct{ from, to netip.Addr }

func prefixRange(p netip.Prefix) ipRange {
	p = p.Masked()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	last, _ := netip.AddrFromSlice(b)
	return ipRange{from: p.Addr(), to: last}
}

// subtract removes cut from every range of rs.
func subtract(rs []ipRange, cut ipRange) []ipRange {
	var out []ipRange
	for _, r := range rs {
		if cut.to.Less(r.from) || r.to.Less(cut.from) {
			out = append(out, r)
			continue
		}
		if r.from.Less(cut.from) {
			out = append(out, ipRange{r.from, cut.from.Prev()})
		}
		if cut.to.Less(r.to) {
			out = append(out, ipRange{cut.to.Next(), r.to})
		}
	}
	return out
}

// merge sorts ranges and joins those that overlap or touch, as an nftables
// interval set needs them (overlapping elements are refused).
func merge(rs []ipRange) []ipRange {
	slices.SortFunc(rs, func(a, b ipRange) int { return a.from.Compare(b.from) })
	var out []ipRange
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if next := last.to.Next(); next.IsValid() && !next.Less(r.from) || !last.to.Less(r.from) {
				if last.to.Less(r.to) {
					last.to = r.to
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// element is the range as an nftables interval element.
func (r ipRange) element() string {
	if r.from == r.to {
		return r.from.String()
	}
	return r.from.String() + "-" + r.to.String()
}

// blockRanges is an ipBlock's cidr without its excepts.
func blockRanges(cidr netip.Prefix, except []netip.Prefix) []ipRange {
	rs := []ipRange{prefixRange(cidr)}
	for _, e := range except {
		rs = subtract(rs, prefixRange(e))
	}
	return rs
}
