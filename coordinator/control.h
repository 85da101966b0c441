/* control.h: the control API served to shoalctl on the coordinator's control socket. The
 * dependency runs one way: control uses coord (coord_int.h); coord knows control only as the
 * coord_control_t that control_attach() installs. */
#ifndef SHOAL_CONTROL_H
#define SHOAL_CONTROL_H

#include "coord.h"

/* Makes `c` answer control requests (call once after coord_new, before coord_run; without it
 * every control request is dropped unanswered). */
void control_attach(coord_t *c);

#endif
