package lab

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/manifests"
)

const agentNamespace = "kube-system"

// AgentOffLabel on a node keeps weft's agent off it once RemoveAgent has
// set the DaemonSet's node affinity (a bench gives a node to kube-proxy).
const AgentOffLabel = "weft.dev/agent-off"

// RemoveAgent takes weft's agent off node for good, as an operator would:
// the node is labelled and the DaemonSet told to avoid that label, so the
// DaemonSet controller deletes the agent's pod and the node's kubelet
// stops it. The template change rolls the other agents too; it returns
// once no agent runs on node and the rest run the new template.
func (l *Lab) RemoveAgent(ctx context.Context, client kubernetes.Interface, node string) error {
	label := fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, AgentOffLabel)
	if _, err := client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(label), metav1.PatchOptions{}); err != nil {
		return err
	}
	affinity := fmt.Sprintf(`{"spec":{"template":{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":`+
		`{"nodeSelectorTerms":[{"matchExpressions":[{"key":%q,"operator":"DoesNotExist"}]}]}}}}}}}`, AgentOffLabel)
	if _, err := client.AppsV1().DaemonSets(agentNamespace).Patch(ctx, manifests.AgentName, types.StrategicMergePatchType, []byte(affinity), metav1.PatchOptions{}); err != nil {
		return err
	}
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		ds, err := client.AppsV1().DaemonSets(agentNamespace).Get(ctx, manifests.AgentName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st := ds.Status
		if agentPID(node) == 0 && st.ObservedGeneration >= ds.Generation && st.UpdatedNumberScheduled == st.DesiredNumberScheduled &&
			st.NumberAvailable == st.DesiredNumberScheduled && st.NumberUnavailable == 0 {
			return nil
		}
	}
	return fmt.Errorf("the agent still runs on %s, or the others have not rolled, after 3m", node)
}
