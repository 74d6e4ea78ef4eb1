package manifests

import (
	"net"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Names of the agent's objects.
const (
	AgentName = "weft-agent"
	DNSName   = "weft-dns"
	LBName    = "weft-lb-ipam"
	// IngressName names the ingress controller's objects; IngressClassName
	// is the IngressClass it serves.
	IngressName      = "weft-ingress"
	IngressClassName = "weft"
	// APIServerConfigMap holds KUBERNETES_SERVICE_HOST and _PORT for agents.
	APIServerConfigMap = "weft-api-server"
)

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

// rbac is a ServiceAccount with a ClusterRole bound to it.
func rbac(c Config, name string, rules []rbacv1.PolicyRule) []runtime.Object {
	role := "weft:" + strings.TrimPrefix(name, "weft-")
	return []runtime.Object{
		&corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace}},
		&rbacv1.ClusterRole{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"), ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: rules},
		&rbacv1.ClusterRoleBinding{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"), ObjectMeta: metav1.ObjectMeta{Name: role},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: c.Namespace}}},
	}
}

func read(group string, resources ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{group}, Resources: resources, Verbs: []string{"get", "list", "watch"}}
}

var eventsRule = rbacv1.PolicyRule{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "update"}}

// agent: RBAC (no Secrets; Node writes limited to its own Node by the
// admission policy), and the DaemonSet.
func agent(c Config) []runtime.Object {
	out := rbac(c, AgentName, []rbacv1.PolicyRule{
		read("", "nodes", "pods", "services", "endpoints", "namespaces"),
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"patch"}},
		eventsRule,
		read("discovery.k8s.io", "endpointslices"),
		read("networking.k8s.io", "networkpolicies"),
		read("policy.networking.k8s.io", "clusternetworkpolicies"),
		{APIGroups: []string{"policy.networking.k8s.io"}, Resources: []string{"clusternetworkpolicies/status"}, Verbs: []string{"update"}},
		read("bgp.weft.dev", "bgpconfigurations", "bgppeers"),
		{APIGroups: []string{"bgp.weft.dev"}, Resources: []string{"bgppeers/status"}, Verbs: []string{"patch"}},
	})
	if c.Backend == "bgp" {
		out = append(out, secretsReader(c, AgentName)...)
	}
	out = append(out, statusLease(c)...)
	out = append(out, ownNodeOnly(c)...)
	if c.APIServer != "" {
		host, port, _ := net.SplitHostPort(c.APIServer)
		out = append(out, &corev1.ConfigMap{TypeMeta: typeMeta("v1", "ConfigMap"),
			ObjectMeta: metav1.ObjectMeta{Name: APIServerConfigMap, Namespace: c.Namespace},
			Data:       map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}})
	}
	return append(out, agentDaemonSet(c))
}

// secretsReader lets a component read Secrets in weft's namespace only
// (the bgp backend's peer passwords), never cluster-wide.
func secretsReader(c Config, name string) []runtime.Object {
	role := name + "-secrets"
	return []runtime.Object{
		&rbacv1.Role{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "Role"), ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: c.Namespace},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}},
		&rbacv1.RoleBinding{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: c.Namespace},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: c.Namespace}}},
	}
}

// statusLease lets agents hold the Lease whose holder writes
// ClusterNetworkPolicy status (create cannot be limited to one name).
func statusLease(c Config) []runtime.Object {
	role := AgentName + "-status-lease"
	return []runtime.Object{
		&rbacv1.Role{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "Role"), ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: c.Namespace},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"weft-policy-status"}, Verbs: []string{"get", "update"}},
			}},
		&rbacv1.RoleBinding{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: c.Namespace},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: AgentName, Namespace: c.Namespace}}},
	}
}

// gatewayServices: weft ingress makes each Gateway's LoadBalancer Service
// and its EndpointSlices (naming the proxy's pods) in the Gateway's
// namespace (its ClusterRole's writes; gatewayServicesGuard limits them);
// one replica, holding the Lease weft-gateway, writes. It reads the
// proxy's pods in its own namespace only.
func gatewayServices(c Config) []runtime.Object {
	role := IngressName + "-gateway-services"
	return []runtime.Object{
		&rbacv1.Role{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "Role"), ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: c.Namespace},
			Rules: []rbacv1.PolicyRule{read("", "pods"),
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{"weft-gateway"}, Verbs: []string{"get", "update"}}}},
		&rbacv1.RoleBinding{TypeMeta: typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"), ObjectMeta: metav1.ObjectMeta{Name: role, Namespace: c.Namespace},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: IngressName, Namespace: c.Namespace}}},
	}
}

// gatewayServicesGuard limits both sides of the Gateways' Services and
// EndpointSlices, which live in tenants' namespaces: weft ingress may
// write only objects labelled gateway.weft.dev/name (its cluster-wide
// write cannot reach anyone else's Service), and nobody else but cluster
// admins may create such an object, label or unlabel one, or change its
// spec, endpoints or ports (a tenant cannot point its Gateway's Service
// at another Gateway's proxy port, or claim that port). Metadata such as
// finalizers and deletion stay open to all.
func gatewayServicesGuard(c Config) []runtime.Object {
	name := "weft-gateway-services"
	sa := "system:serviceaccount:" + c.Namespace + ":" + IngressName
	label := "'gateway.weft.dev/name'"
	isIngress := "request.userInfo.username == '" + sa + "'"
	newOurs := "(object != null && has(object.metadata.labels) && " + label + " in object.metadata.labels)"
	oldOurs := "(oldObject != null && has(oldObject.metadata.labels) && " + label + " in oldObject.metadata.labels)"
	unchanged := "(request.resource.resource == 'services' ? object.spec == oldObject.spec : " +
		"((has(object.endpoints) == has(oldObject.endpoints)) && (!has(object.endpoints) || object.endpoints == oldObject.endpoints) && " +
		"(has(object.ports) == has(oldObject.ports)) && (!has(object.ports) || object.ports == oldObject.ports)))"
	return []runtime.Object{
		&admissionv1.ValidatingAdmissionPolicy{TypeMeta: typeMeta("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"),
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: admissionv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr.To(admissionv1.Fail),
				MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionv1.RuleWithOperations{Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete},
						Rule: admissionv1.Rule{APIGroups: []string{"", "discovery.k8s.io"}, APIVersions: []string{"v1"}, Resources: []string{"services", "endpointslices"}}}}}},
				// Only weft ingress's writes and writes of Gateways' objects are
				// judged: the rest of the cluster's Service and EndpointSlice
				// traffic never meets the policy.
				MatchConditions: []admissionv1.MatchCondition{{Name: "weft-ingress-or-gateway-object", Expression: isIngress + " || " + newOurs + " || " + oldOurs}},
				Variables: []admissionv1.Variable{
					{Name: "ingress", Expression: isIngress},
					{Name: "newOurs", Expression: newOurs},
					{Name: "oldOurs", Expression: oldOurs},
				},
				Validations: []admissionv1.Validation{
					{Expression: "!variables.ingress || ((object == null || variables.newOurs) && (oldObject == null || variables.oldOurs))",
						Message: "weft-ingress may write only the Services and EndpointSlices it makes for Gateways (labelled gateway.weft.dev/name)"},
					{Expression: "variables.ingress || 'system:masters' in request.userInfo.groups || request.operation == 'DELETE' || (!variables.newOurs && !variables.oldOurs) || " +
						"(variables.newOurs && variables.oldOurs && object.metadata.labels == oldObject.metadata.labels && " + unchanged + ")",
						Message: "the Services and EndpointSlices of Gateways (labelled gateway.weft.dev/name) are weft-ingress's: their labels, spec, endpoints and ports are not to be changed"},
				},
			}},
		&admissionv1.ValidatingAdmissionPolicyBinding{TypeMeta: typeMeta("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"),
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: name,
				ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}}},
	}
}

// ownNodeOnly: a pod-bound ServiceAccount token names its node; the agent
// may change only the Node of that name.
func ownNodeOnly(c Config) []runtime.Object {
	name := "weft-agent-own-node"
	sa := "system:serviceaccount:" + c.Namespace + ":" + AgentName
	return []runtime.Object{
		&admissionv1.ValidatingAdmissionPolicy{TypeMeta: typeMeta("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"),
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: admissionv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr.To(admissionv1.Fail),
				MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionv1.RuleWithOperations{Operations: []admissionv1.OperationType{admissionv1.Update},
						Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"nodes"}}}}}},
				MatchConditions: []admissionv1.MatchCondition{{Name: "is-weft-agent", Expression: "request.userInfo.username == '" + sa + "'"}},
				Validations: []admissionv1.Validation{{
					Expression: "'authentication.kubernetes.io/node-name' in request.userInfo.extra && " +
						"object.metadata.name == request.userInfo.extra['authentication.kubernetes.io/node-name'][0]",
					Message: "weft-agent may change only the Node its pod runs on",
				}},
			}},
		&admissionv1.ValidatingAdmissionPolicyBinding{TypeMeta: typeMeta("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"),
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: name,
				ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}}},
	}
}

func hostPath(name, path string, t corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &t}}}
}

func agentDaemonSet(c Config) *appsv1.DaemonSet {
	labels := map[string]string{"app.kubernetes.io/name": AgentName}
	args := []string{"agent", "--node-name=$(NODE_NAME)", "--cni-conf-dir=/host/cni/net.d",
		"--cni-runtime-config=/run/weft/cni-runtime.json", "--cni-data-dir=/var/lib/weft/cni", "--backend=" + c.Backend,
		"--cluster-dns=" + c.ClusterDNS + ":53", "--namespace=" + c.Namespace}
	for _, cidr := range c.ClusterCIDRs {
		args = append(args, "--cluster-cidr="+cidr)
	}
	for _, cidr := range c.ServiceCIDRs {
		args = append(args, "--service-cidr="+cidr)
	}
	if c.NodeLocalDNS != "" {
		args = append(args, "--node-local-dns="+c.NodeLocalDNS)
	}
	for _, cidr := range c.NoMasquerade {
		args = append(args, "--no-masquerade="+cidr)
	}
	args = append(args, c.AgentArgs...)
	health := corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "127.0.0.1", Path: "/healthz", Port: intstr.FromInt32(9402)}}
	// Readiness every 2 s: the agent is usually healthy a moment after its
	// first probe, and a 10 s period left the DaemonSet unready that long
	// after every node was.
	readiness := &corev1.Probe{ProbeHandler: health, PeriodSeconds: 2, FailureThreshold: 3}
	liveness := &corev1.Probe{ProbeHandler: health, PeriodSeconds: 10, FailureThreshold: 3}
	mounts := []corev1.VolumeMount{{Name: "cni-conf", MountPath: "/host/cni/net.d"}, {Name: "run", MountPath: "/run/weft"},
		{Name: "data", MountPath: "/var/lib/weft"}}
	return &appsv1.DaemonSet{TypeMeta: typeMeta("apps/v1", "DaemonSet"), ObjectMeta: metav1.ObjectMeta{Name: AgentName, Namespace: c.Namespace, Labels: labels},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(1))}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				ServiceAccountName: AgentName, HostNetwork: true, DNSPolicy: corev1.DNSClusterFirstWithHostNet,
				PriorityClassName: "system-node-critical", Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				TerminationGracePeriodSeconds: ptr.To[int64](30),
				InitContainers: []corev1.Container{{Name: "install-cni", Image: c.Image,
					Args:         []string{"install-cni", "--to=/host/cni/bin"},
					VolumeMounts: []corev1.VolumeMount{{Name: "cni-bin", MountPath: "/host/cni/bin"}}}},
				Containers: []corev1.Container{{Name: "agent", Image: c.Image, Args: args,
					Env: []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
					// The API server's address, not the kubernetes Service's
					// ClusterIP, which only the agent itself makes work.
					EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: APIServerConfigMap}, Optional: ptr.To(true)}}},
					// Routes, links, nftables and the node's network sysctls:
					// writing /proc/sys/net needs a privileged container.
					SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
					ReadinessProbe:  readiness, LivenessProbe: liveness, VolumeMounts: mounts}},
				Volumes: []corev1.Volume{hostPath("cni-bin", c.CNIBinDir, corev1.HostPathDirectoryOrCreate),
					hostPath("cni-conf", c.CNIConfDir, corev1.HostPathDirectoryOrCreate),
					hostPath("run", "/run/weft", corev1.HostPathDirectoryOrCreate), hostPath("data", "/var/lib/weft", corev1.HostPathDirectoryOrCreate)},
			}}}}
}

// dns: the cluster DNS, named like the kube-dns add-on (k8s-app=kube-dns,
// Service kube-dns), since tools and tests look for those names.
func dns(c Config) []runtime.Object {
	out := rbac(c, DNSName, []rbacv1.PolicyRule{read("", "services", "pods", "namespaces"), read("discovery.k8s.io", "endpointslices")})
	labels := map[string]string{"k8s-app": "kube-dns"}
	svc := &corev1.Service{TypeMeta: typeMeta("v1", "Service"), ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: c.Namespace, Labels: labels},
		Spec: corev1.ServiceSpec{ClusterIP: c.ClusterDNS, Selector: labels, Ports: []corev1.ServicePort{
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
			{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)},
			{Name: "metrics", Protocol: corev1.ProtocolTCP, Port: 9153, TargetPort: intstr.FromInt32(9153)},
		}}}
	args := []string{"--zone=" + c.ClusterDomain, "--nameserver-ip=" + c.ClusterDNS, "--listen=:53", "--http=:9153"}
	for _, u := range c.DNSUpstreams {
		args = append(args, "--upstream="+u)
	}
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(9153)}},
			PeriodSeconds: 2, FailureThreshold: 3}
	}
	dep := &appsv1.Deployment{TypeMeta: typeMeta("apps/v1", "Deployment"), ObjectMeta: metav1.ObjectMeta{Name: DNSName, Namespace: c.Namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(c.DNSReplicas), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				ServiceAccountName: DNSName,
				DNSPolicy:          corev1.DNSDefault, // its own lookups go to the node's resolvers
				// Replicas on different nodes where there are enough: a node
				// going down takes one at most.
				Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
					PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100,
						PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname",
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}}}}},
				PriorityClassName: "system-cluster-critical",
				Tolerations: []corev1.Toleration{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule},
					{Key: "CriticalAddonsOnly", Operator: corev1.TolerationOpExists}},
				// weft-dns: the DNS server alone, half weft's size.
				Containers: []corev1.Container{{Name: "dns", Image: c.Image, Command: []string{"/usr/local/bin/weft-dns"}, Args: args,
					Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
						{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP}, {Name: "metrics", ContainerPort: 9153}},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
						Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}}},
					ReadinessProbe: probe("/ready"), LivenessProbe: probe("/healthz")}},
			}}}}
	return append(out, svc, dep)
}

// lbIPAM: hands LoadBalancer Services addresses from the pool.
func lbIPAM(c Config) []runtime.Object {
	out := rbac(c, LBName, []rbacv1.PolicyRule{read("", "services"),
		{APIGroups: []string{""}, Resources: []string{"services/status"}, Verbs: []string{"patch", "update"}},
		// The load-balancer cleanup finalizer, as the cloud service controller's.
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"patch"}}, eventsRule})
	labels := map[string]string{"app.kubernetes.io/name": LBName}
	dep := &appsv1.Deployment{TypeMeta: typeMeta("apps/v1", "Deployment"), ObjectMeta: metav1.ObjectMeta{Name: LBName, Namespace: c.Namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}, // one allocator at a time
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				ServiceAccountName: LBName, PriorityClassName: "system-cluster-critical",
				Tolerations: []corev1.Toleration{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}},
				Containers: []corev1.Container{{Name: "lb-ipam", Image: c.Image, Args: []string{"lb-ipam", "--pool=" + c.LBPool},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
						RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
			}}}}
	return append(out, dep)
}

// ingress: the Ingress controller and its proxy behind a LoadBalancer
// Service. It is the only component that reads Secrets and ConfigMaps:
// get/list/watch (RBAC cannot name them in advance), used only with a
// field selector on each name an Ingress gives (its tls section; its
// custom-headers annotation, in its own namespace).
func ingress(c Config) []runtime.Object {
	out := rbac(c, IngressName, []rbacv1.PolicyRule{
		read("networking.k8s.io", "ingresses", "ingressclasses"),
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses/status"}, Verbs: []string{"update", "patch"}},
		read("", "services", "secrets", "configmaps", "namespaces"),
		read("discovery.k8s.io", "endpointslices"),
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"create", "update", "delete"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"create", "update", "delete"}},
		eventsRule,
		read("gateway.networking.k8s.io", "gatewayclasses", "gateways", "httproutes", "grpcroutes", "tlsroutes", "referencegrants", "backendtlspolicies", "listenersets"),
		{APIGroups: []string{"gateway.networking.k8s.io"}, Resources: []string{"gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status", "tlsroutes/status", "backendtlspolicies/status", "listenersets/status"}, Verbs: []string{"update"}},
	})
	out = append(out, gatewayServices(c)...)
	out = append(out, gatewayServicesGuard(c)...)
	labels := map[string]string{"app.kubernetes.io/name": IngressName}
	class := &networkingv1.IngressClass{TypeMeta: typeMeta("networking.k8s.io/v1", "IngressClass"),
		ObjectMeta: metav1.ObjectMeta{Name: IngressClassName, Labels: labels}, Spec: networkingv1.IngressClassSpec{Controller: "weft.dev/ingress"}}
	if c.IngressDefaultClass {
		class.Annotations = map[string]string{"ingressclass.kubernetes.io/is-default-class": "true"}
	}
	svc := &corev1.Service{TypeMeta: typeMeta("v1", "Service"), ObjectMeta: metav1.ObjectMeta{Name: IngressName, Namespace: c.Namespace, Labels: labels},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: labels, Ports: []corev1.ServicePort{
			{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http")},
			{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443, TargetPort: intstr.FromString("https")},
		}}}
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(10254)}},
		PeriodSeconds: 5, FailureThreshold: 3}
	dep := &appsv1.Deployment{TypeMeta: typeMeta("apps/v1", "Deployment"), ObjectMeta: metav1.ObjectMeta{Name: IngressName, Namespace: c.Namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(c.IngressReplicas), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				ServiceAccountName: IngressName, PriorityClassName: "system-cluster-critical",
				Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
					PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100,
						PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname",
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}}}}},
				Containers: []corev1.Container{{Name: "ingress", Image: c.Image,
					Args:  []string{"ingress", "--publish-service=" + c.Namespace + "/" + IngressName, "--gateway-namespace=" + c.Namespace},
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}, {Name: "https", ContainerPort: 443}, {Name: "health", ContainerPort: 10254}},
					SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
						Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_BIND_SERVICE"}}},
					ReadinessProbe: probe, LivenessProbe: probe}},
			}}}}
	out = append(out, class, svc, dep)
	if c.IngressNginxClass {
		// ingress-nginx's class, served by weft: its users' Ingresses
		// (ingressClassName nginx) move without edits. The operator
		// deletes ingress-nginx's own IngressClass first (a class's
		// controller cannot change).
		out = append(out, &networkingv1.IngressClass{TypeMeta: typeMeta("networking.k8s.io/v1", "IngressClass"),
			ObjectMeta: metav1.ObjectMeta{Name: "nginx", Labels: labels}, Spec: networkingv1.IngressClassSpec{Controller: "weft.dev/ingress"}})
	}
	return out
}
