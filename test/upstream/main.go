// Command upstream reports on a run of the upstream [sig-network] e2e suite
// (hack/e2e-upstream.sh):
//
//	go run ./test/upstream skip-regex            # the default --skip
//	go run ./test/upstream summary JUNIT         # counts and failures
//	go run ./test/upstream doc JUNIT [JUNIT…] > docs/e2e.md  # passes merged
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"weft.dev/weft/internal/e2eupstream"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "upstream:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: upstream skip-regex | summary JUNIT | doc JUNIT [JUNIT…]")
	}
	switch args[0] {
	case "skip-regex":
		fmt.Println(e2eupstream.SkipRegex())
		return nil
	case "summary", "doc":
		if len(args) < 2 || (args[0] == "summary" && len(args) != 2) {
			return fmt.Errorf("%s needs the JUnit report path(s)", args[0])
		}
		var passes [][]e2eupstream.Spec
		for _, path := range args[1:] {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			specs, err := e2eupstream.Classify(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			passes = append(passes, specs)
		}
		specs := e2eupstream.Merge(passes...)
		if len(specs) == 0 {
			return fmt.Errorf("%s has no [sig-network] specs", args[1])
		}
		if args[0] == "summary" {
			e2eupstream.WriteSummary(os.Stdout, specs)
		} else {
			// The run's revision, recorded by hack/e2e-upstream.sh beside the report.
			rev, err := os.ReadFile(filepath.Join(filepath.Dir(args[1]), "revision"))
			if err != nil {
				rev = []byte("unknown")
			}
			target := os.Getenv("DOC_TARGET") // the make target that wrote the page
			if target == "" {
				target = "make e2e-doc"
			}
			e2eupstream.WriteDoc(os.Stdout, specs, "v1.37.2", target, strings.TrimSpace(string(rev)))
		}
		return nil
	}
	return fmt.Errorf("unknown subcommand %q", args[0])
}
