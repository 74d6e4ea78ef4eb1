package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/lab/image"
	"weft.dev/weft/internal/manifests"
)

// The lab installs weft as a user does: from its image and the generated
// manifests. LabImage is the reference the lab loads `make lab-image` as.
const LabImage = "weft.dev/weft:lab"

// ImageTable is the file mapping image references to unpacked images,
// read by every lab node when it starts a container.
func (l *Lab) ImageTable() string { return filepath.Join(l.dir, "images.json") }

// NodeRoot is a lab node's own root directory: what a node keeps under
// /etc/cni, /opt/cni/bin, /run/weft and /var/lib/weft is there.
func (l *Lab) NodeRoot(node string) string { return filepath.Join(l.NodeDir(node), "root") }

// DefaultImageDir is where `make lab-image` writes the OCI layout.
func (l *Lab) DefaultImageDir() string {
	return filepath.Join(filepath.Dir(l.binDir), "_output", "lab-image")
}

// LoadImage unpacks the OCI layout in dir and makes ref run from it on
// every lab node (as a pull would).
func (l *Lab) LoadImage(dir, ref string) (*image.Image, error) {
	img, err := image.Unpack(dir, filepath.Join(l.dir, "images"))
	if err != nil {
		return nil, fmt.Errorf("%w (build it with `make lab-image`)", err)
	}
	return img, image.Add(l.ImageTable(), ref, img)
}

// ManifestConfig is the lab's `weft manifests` configuration.
func (l *Lab) ManifestConfig(st *State, imageRef string) manifests.Config {
	c := manifests.Defaults()
	c.Image = imageRef
	c.ClusterCIDRs, c.ServiceCIDRs = []string{ClusterCIDR}, []string{ServiceCIDR}
	c.NoMasquerade = []string{UnderlayCIDR}
	if st.DualStack {
		c.ClusterCIDRs = append(c.ClusterCIDRs, ClusterCIDR6)
		c.ServiceCIDRs = append(c.ServiceCIDRs, ServiceCIDR6)
		c.NoMasquerade = append(c.NoMasquerade, UnderlayCIDR6)
	}
	c.ClusterDNS, c.ClusterDomain, c.NodeLocalDNS = ClusterDNS, ClusterDomain, NodeLocalDNS
	c.Backend = st.Backend
	c.DNSUpstreams = []string{OutsideDNS}
	c.DNSReplicas = DNSReplicas
	c.LBPool = LBPool
	// The lab serves the experimental channel's fields (retries) too.
	c.GatewayChannel = "experimental"
	c.APIServer = net.JoinHostPort(APIServerIP().String(), strconv.Itoa(APIPort))
	// Benchmarks read heap profiles; tests that kill CNI plugins check for
	// leaked addresses without waiting minutes; tests read metrics and
	// reach every node at its address.
	c.AgentArgs = []string{"--profiling", "--ip-reclaim-grace=20s", "--metrics-addr=:9402"}
	return c
}

// Install applies the manifests for conf, retrying while the API server
// is still starting its RBAC and admission APIs.
func (l *Lab) Install(ctx context.Context, client kubernetes.Interface, conf manifests.Config) error {
	return l.install(ctx, client, conf, func(runtime.Object) bool { return true })
}

// install applies the objects of conf's manifests that pick selects.
func (l *Lab) install(ctx context.Context, client kubernetes.Interface, conf manifests.Config, pick func(runtime.Object) bool) error {
	objs, err := manifests.Objects(conf)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if !pick(o) {
			continue
		}
		for i := 0; ; i++ {
			err = applyObject(ctx, client, o)
			if err == nil {
				break
			}
			if i == 50 {
				return fmt.Errorf("apply %T: %w", o, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// applyObject creates o or, when it exists, replaces its spec (the kinds
// the manifests hold).
func applyObject(ctx context.Context, c kubernetes.Interface, o runtime.Object) error {
	cr, up := metav1.CreateOptions{}, metav1.UpdateOptions{}
	var err error
	switch o := o.(type) {
	case *corev1.ServiceAccount:
		_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, cr)
	case *corev1.ConfigMap:
		if _, err = c.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, cr); apierrors.IsAlreadyExists(err) {
			_, err = c.CoreV1().ConfigMaps(o.Namespace).Update(ctx, o, up)
		}
	case *corev1.Service:
		// A Service with a fixed clusterIP that exists fails validation
		// before the existence check: look first.
		if _, err = c.CoreV1().Services(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			_, err = c.CoreV1().Services(o.Namespace).Create(ctx, o, cr)
		}
	case *rbacv1.ClusterRole:
		if _, err = c.RbacV1().ClusterRoles().Create(ctx, o, cr); apierrors.IsAlreadyExists(err) {
			_, err = c.RbacV1().ClusterRoles().Update(ctx, o, up)
		}
	case *rbacv1.ClusterRoleBinding:
		_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, o, cr)
	case *admissionv1.ValidatingAdmissionPolicy:
		_, err = c.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, o, cr)
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		_, err = c.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, o, cr)
	case *networkingv1.IngressClass:
		_, err = c.NetworkingV1().IngressClasses().Create(ctx, o, cr)
	case *appsv1.DaemonSet:
		if _, err = c.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, cr); apierrors.IsAlreadyExists(err) {
			err = updateDaemonSet(ctx, c, o)
		}
	case *appsv1.Deployment:
		if _, err = c.AppsV1().Deployments(o.Namespace).Create(ctx, o, cr); apierrors.IsAlreadyExists(err) {
			err = updateDeployment(ctx, c, o)
		}
	case *rbacv1.Role:
		if _, err = c.RbacV1().Roles(o.Namespace).Create(ctx, o, cr); apierrors.IsAlreadyExists(err) {
			_, err = c.RbacV1().Roles(o.Namespace).Update(ctx, o, up)
		}
	case *rbacv1.RoleBinding:
		_, err = c.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, cr)
	case *unstructured.Unstructured:
		err = applyCRD(ctx, c, o)
	default:
		return fmt.Errorf("the lab cannot apply a %T", o)
	}
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// applyCRD creates a CustomResourceDefinition or replaces it (client-go
// has no typed client for them: the discovery client's REST client does).
func applyCRD(ctx context.Context, c kubernetes.Interface, o *unstructured.Unstructured) error {
	if o.GetKind() != "CustomResourceDefinition" {
		return fmt.Errorf("the lab cannot apply a %s", o.GetKind())
	}
	const path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
	rc := c.Discovery().RESTClient()
	body, err := o.MarshalJSON()
	if err != nil {
		return err
	}
	err = rc.Post().AbsPath(path).Body(body).Do(ctx).Error()
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	cur := &unstructured.Unstructured{}
	raw, err := rc.Get().AbsPath(path, o.GetName()).DoRaw(ctx)
	if err != nil {
		return err
	}
	if err := cur.UnmarshalJSON(raw); err != nil {
		return err
	}
	o = o.DeepCopy()
	o.SetResourceVersion(cur.GetResourceVersion())
	if body, err = o.MarshalJSON(); err != nil {
		return err
	}
	return rc.Put().AbsPath(path, o.GetName()).Body(body).Do(ctx).Error()
}

func updateDaemonSet(ctx context.Context, c kubernetes.Interface, o *appsv1.DaemonSet) error {
	cur, err := c.AppsV1().DaemonSets(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	cur.Spec = o.Spec
	_, err = c.AppsV1().DaemonSets(o.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

func updateDeployment(ctx context.Context, c kubernetes.Interface, o *appsv1.Deployment) error {
	cur, err := c.AppsV1().Deployments(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	cur.Spec = o.Spec
	_, err = c.AppsV1().Deployments(o.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// AgentLog is the path of the log of the agent running on node (its
// DaemonSet pod's container log, as `kubectl logs` reads it).
func (l *Lab) AgentLog(ctx context.Context, client kubernetes.Interface, node string) (string, error) {
	pods, err := client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=" + manifests.AgentName, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return "", err
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			return filepath.Join(l.NodeDir(node), "pods", string(p.UID), "agent.log"), nil
		}
	}
	return "", fmt.Errorf("no agent pod on %s", node)
}

func isDeployment(o runtime.Object) bool { _, ok := o.(*appsv1.Deployment); return ok }

// prepareNodeRoot makes a lab node's root directory.
func (l *Lab) prepareNodeRoot(n Node) error {
	root := l.NodeRoot(n.Name)
	for _, d := range []string{"etc/cni/net.d", "opt/cni/bin", "run", "var/lib", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	return nil
}
