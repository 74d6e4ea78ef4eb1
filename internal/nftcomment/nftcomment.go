// Package nftcomment makes nftables comments the kernel accepts whatever
// object names go into them.
package nftcomment

import "unicode/utf8"

// MaxLen is the kernel's limit on a comment (NFT_USERDATA_MAXLEN, 128 bytes
// including the terminating NUL, as nft stores it). A longer comment fails
// the whole transaction, and with it every other object in it.
const MaxLen = 127

// Bounded returns s cut to MaxLen bytes on a rune boundary, ending in "~"
// when cut so a reader sees it was.
func Bounded(s string) *string {
	if len(s) <= MaxLen {
		return &s
	}
	cut := MaxLen - 1
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	out := s[:cut] + "~"
	return &out
}
