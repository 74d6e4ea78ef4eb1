package dns

import "time"

// time_ is a settable clock for cache tests.
type time_ int64

func (t *time_) get() time.Time { return time.Unix(int64(*t), 0) }
func (t *time_) add(s int64)    { *t += time_(s) }
