// Package version holds weft's version, set at build time with -ldflags.
package version

// Version is overridden by the Makefile with the git description.
var Version = "dev"
