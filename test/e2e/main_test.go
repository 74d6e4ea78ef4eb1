//go:build e2e

// Package e2e runs scenarios against a real lab: the real control plane,
// lab nodes in network namespaces, the real weft binaries. Run as root:
//
//	go test -tags e2e ./test/e2e/...
//
// WEFT_E2E_REUSE=1 uses a lab that is already up and leaves it running.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/lab"
)

var (
	repoRoot string
	theLab   *lab.Lab
	client   kubernetes.Interface
	reuse    = os.Getenv("WEFT_E2E_REUSE") == "1"
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e tests need root")
		os.Exit(1)
	}
	theLab = lab.New(lab.DefaultStateDir, lab.DefaultCacheDir, filepath.Join(repoRoot, "bin"), os.Stdout)
	if !reuse {
		start := time.Now()
		if err := theLab.Up(context.Background(), lab.UpOptions{Workers: 4, Racks: 2, Backend: "vxlan"}); err != nil {
			fmt.Fprintln(os.Stderr, "lab up:", err)
			dumpLogs()
			theLab.Down()
			os.Exit(1)
		}
		fmt.Printf("lab up took %s\n", time.Since(start).Round(time.Millisecond))
	}
	var err error
	client, err = theLab.Client()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if code != 0 {
		dumpLogs()
	}
	if !reuse {
		for _, check := range []struct {
			name string
			run  func() error
		}{{"uninstall leaves nothing on a node", uninstallLeavesNothing}, {"lab up after a crash", upAfterCrash}, {"lab down leaves nothing", downLeavesNothing}} {
			if err := check.run(); err != nil {
				fmt.Printf("--- FAIL: %s: %v\n", check.name, err)
				code = 1
			} else {
				fmt.Printf("--- PASS: %s\n", check.name)
			}
		}
		theLab.Down() // after a failed check
	}
	os.Exit(code)
}

// dumpLogs prints the tail of every lab log to help explain a failure.
func dumpLogs() {
	files, _ := filepath.Glob(filepath.Join(lab.DefaultStateDir, "logs", "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines := strings.Split(string(b), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Printf("----- %s\n%s\n", f, strings.Join(lines, "\n"))
	}
}

// newNamespace makes a test namespace and deletes it at the end.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("e2e-%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), time.Now().UnixNano()%100000)
	if len(name) > 63 {
		name = name[len(name)-63:]
		name = "e" + strings.TrimLeft(name[1:], "-")
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The namespace's default ServiceAccount must exist before pods.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := client.CoreV1().ServiceAccounts(name).Get(context.Background(), "default", metav1.GetOptions{}); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// execIn runs argv in a pod, on a node or in "outside" and returns stdout.
func execIn(t *testing.T, target, container string, argv ...string) (string, error) {
	t.Helper()
	return execInFor(t, 20*time.Second, target, container, argv...)
}

// execInFor is execIn with a time limit other than 20 s.
func execInFor(t *testing.T, limit time.Duration, target, container string, argv ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	err := theLab.Exec(ctx, lab.ExecOptions{Target: target, Container: container, Argv: argv, Stdout: &out, Stderr: &errb})
	if err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, errb.String())
	}
	return strings.TrimSpace(out.String()), nil
}

func curl(t *testing.T, target, url string) string {
	t.Helper()
	out, err := execIn(t, target, "", "curl", "-sS", "-m", "5", url)
	if err != nil {
		t.Fatalf("curl %s from %s: %v", url, target, err)
	}
	return out
}

func hostCommand(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s: %v", what, timeout, err)
}

// relab replaces the lab with a new one and points the client at it.
func relab(t *testing.T, o lab.UpOptions) {
	t.Helper()
	if reuse {
		t.Skip("WEFT_E2E_REUSE=1: not replacing the lab")
	}
	if err := theLab.Up(context.Background(), o); err != nil {
		dumpLogs()
		t.Fatalf("lab up %+v: %v", o, err)
	}
	c, err := theLab.Client()
	if err != nil {
		t.Fatal(err)
	}
	client = c
}

// deployWeb runs lab.DemoDeployment "web" with n replicas and returns its
// Ready pods.
func deployWeb(t *testing.T, ns string, n int32) []corev1.Pod {
	t.Helper()
	ctx := context.Background()
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, lab.DemoDeployment(ns, "web", n), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods, err := lab.WaitPodsReady(ctx, client, ns, "app=web", int(n), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return pods
}
