package proxy

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// ElementWriter replaces the static elements of every set and map of a
// ruleset in one kernel transaction. Full syncs use it for the bulk of the
// table (100k+ elements at 10k services), which `nft -f` parses at ~10 µs
// a line; the structure (chains, rules, set declarations) still goes
// through knftables.
type ElementWriter interface {
	ReplaceElements(m *Ruleset) error
	// Objects names the table's chains, and its named sets and maps.
	Objects() (chains, sets, maps []string, err error)
}

// NetlinkElements writes elements with google/nftables: per set or map,
// flush and add, all in one netlink batch, so packets see the old or the
// new elements, never an empty map.
type NetlinkElements struct {
	Table string
	// NetNSPath: the namespace whose table to write; empty means the
	// calling thread's (read when ReplaceElements is called).
	NetNSPath string
}

// elementsPerMessage bounds one NEWSETELEM message (each element is some
// 40-60 bytes of attributes).
const elementsPerMessage = 1024

// conn opens a netlink connection in the target namespace; call close
// when done.
func (w *NetlinkElements) conn(opts ...nftables.ConnOption) (*nftables.Conn, func(), error) {
	path := w.NetNSPath
	if path == "" {
		path = "/proc/thread-self/ns/net"
	}
	nsFile, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	conn, err := nftables.New(append(opts, nftables.WithNetNSFd(int(nsFile.Fd())))...)
	if err != nil {
		nsFile.Close()
		return nil, nil, err
	}
	return conn, func() { nsFile.Close() }, nil
}

// Objects lists over netlink: `nft list sets` would print every element.
func (w *NetlinkElements) Objects() (chains, sets, maps []string, err error) {
	conn, done, err := w.conn()
	if err != nil {
		return nil, nil, nil, err
	}
	defer done()
	all, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, c := range all {
		if c.Table.Name == w.Table {
			chains = append(chains, c.Name)
		}
	}
	ss, err := conn.GetSets(&nftables.Table{Name: w.Table, Family: nftables.TableFamilyINet})
	if err != nil {
		return nil, nil, nil, err
	}
	for _, s := range ss {
		switch {
		case s.Anonymous:
		case s.IsMap:
			maps = append(maps, s.Name)
		default:
			sets = append(sets, s.Name)
		}
	}
	return chains, sets, maps, nil
}

func (w *NetlinkElements) ReplaceElements(m *Ruleset) error {
	batch, err := encodeElements(m)
	if err != nil {
		return err
	}
	size := 0
	for _, b := range batch {
		size += 64 * (len(b.elems) + 1)
	}
	conn, done, err := w.conn(nftables.WithSockOptions(sendBuffer(size)))
	if err != nil {
		return err
	}
	defer done()
	table := &nftables.Table{Name: w.Table, Family: nftables.TableFamilyINet}
	for _, b := range batch {
		set := &nftables.Set{Table: table, Name: b.name, IsMap: b.isMap}
		conn.FlushSet(set)
		for start := 0; start < len(b.elems); start += elementsPerMessage {
			end := min(start+elementsPerMessage, len(b.elems))
			if err := conn.SetAddElements(set, b.elems[start:end]); err != nil {
				return err
			}
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("writing set elements over netlink: %w", err)
	}
	return nil
}

// sendBuffer makes room for the whole batch: it goes to the kernel in one
// sendmsg, which fails beyond the socket's send buffer.
func sendBuffer(size int) nftables.SockOption {
	return func(c *netlink.Conn) error {
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, max(size, 1<<20))
		}); err != nil {
			return err
		}
		return serr
	}
}

type setElements struct {
	name  string
	isMap bool
	elems []nftables.SetElement
}

// encodeElements turns the ruleset's elements (nft syntax) into kernel
// encodings, per set and map with static elements. Sets that packets fill
// (dynamic: session affinity) are left alone.
func encodeElements(m *Ruleset) ([]setElements, error) {
	type decl struct {
		key, data []string
		isMap     bool
	}
	decls := map[string]decl{}
	var order []string
	for _, name := range sortedKeys(m.sets) {
		s := m.sets[name]
		if hasFlag(s.Flags, knftables.DynamicFlag) {
			continue
		}
		if s.Type == "" {
			return nil, fmt.Errorf("set %s: only plain types can be written over netlink", name)
		}
		decls[name] = decl{key: strings.Split(s.Type, " . ")}
		order = append(order, name)
	}
	for _, name := range sortedKeys(m.maps) {
		mp := m.maps[name]
		k, v, ok := strings.Cut(mp.Type, " : ")
		if !ok {
			return nil, fmt.Errorf("map %s: only plain types can be written over netlink", name)
		}
		decls[name] = decl{key: strings.Split(k, " . "), data: strings.Split(v, " . "), isMap: true}
		order = append(order, name)
	}
	byName := map[string][]nftables.SetElement{}
	for _, e := range m.elems {
		name := e.Set + e.Map
		d, ok := decls[name]
		if !ok {
			return nil, fmt.Errorf("element of undeclared set %s", name)
		}
		key, err := encodeConcat(d.key, e.Key)
		if err != nil {
			return nil, fmt.Errorf("%s key %v: %w", name, e.Key, err)
		}
		el := nftables.SetElement{Key: key}
		switch {
		case !d.isMap:
		case len(d.data) == 1 && d.data[0] == "verdict":
			if el.VerdictData, err = encodeVerdict(e.Value); err != nil {
				return nil, fmt.Errorf("%s value %v: %w", name, e.Value, err)
			}
		default:
			if el.Val, err = encodeConcat(d.data, e.Value); err != nil {
				return nil, fmt.Errorf("%s value %v: %w", name, e.Value, err)
			}
		}
		byName[name] = append(byName[name], el)
	}
	out := make([]setElements, 0, len(order))
	for _, name := range order {
		out = append(out, setElements{name: name, isMap: decls[name].isMap, elems: byName[name]})
	}
	return out, nil
}

func hasFlag(flags []knftables.SetFlag, f knftables.SetFlag) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

// encodeConcat encodes values of the given nft types; in a concatenation
// every field takes a multiple of 4 bytes (the kernel's register size).
func encodeConcat(types, vals []string) ([]byte, error) {
	if len(types) != len(vals) {
		return nil, fmt.Errorf("%d values for %d fields", len(vals), len(types))
	}
	var out []byte
	for i, t := range types {
		b, err := encodeField(strings.TrimSpace(t), strings.TrimSpace(vals[i]))
		if err != nil {
			return nil, err
		}
		if len(types) > 1 {
			for len(b)%4 != 0 {
				b = append(b, 0)
			}
		}
		out = append(out, b...)
	}
	return out, nil
}

var protoNumbers = map[string]uint8{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

func encodeField(typ, val string) ([]byte, error) {
	switch typ {
	case "ipv4_addr":
		ip := net.ParseIP(val).To4()
		if ip == nil {
			return nil, fmt.Errorf("not an IPv4 address: %q", val)
		}
		return []byte(ip), nil
	case "ipv6_addr":
		ip := net.ParseIP(val)
		if ip == nil || ip.To4() != nil {
			return nil, fmt.Errorf("not an IPv6 address: %q", val)
		}
		return []byte(ip.To16()), nil
	case "inet_proto":
		if p, ok := protoNumbers[val]; ok {
			return []byte{p}, nil
		}
		n, err := strconv.ParseUint(val, 10, 8)
		if err != nil {
			return nil, fmt.Errorf("not a protocol: %q", val)
		}
		return []byte{uint8(n)}, nil
	case "inet_service":
		n, err := strconv.ParseUint(val, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("not a port: %q", val)
		}
		return binary.BigEndian.AppendUint16(nil, uint16(n)), nil
	}
	return nil, fmt.Errorf("type %s cannot be written over netlink", typ)
}

func encodeVerdict(value []string) (*expr.Verdict, error) {
	f := strings.Fields(strings.Join(value, " "))
	if len(f) == 0 {
		return nil, fmt.Errorf("empty verdict")
	}
	kinds := map[string]expr.VerdictKind{"goto": expr.VerdictGoto, "jump": expr.VerdictJump,
		"drop": expr.VerdictDrop, "accept": expr.VerdictAccept, "return": expr.VerdictReturn}
	kind, ok := kinds[f[0]]
	switch {
	case !ok:
		return nil, fmt.Errorf("unknown verdict %q", f[0])
	case (kind == expr.VerdictGoto || kind == expr.VerdictJump) != (len(f) == 2) || len(f) > 2:
		return nil, fmt.Errorf("malformed verdict %q", strings.Join(f, " "))
	}
	v := &expr.Verdict{Kind: kind}
	if len(f) == 2 {
		v.Chain = f[1]
	}
	return v, nil
}
