/* grad_attack.h: shoal-worker-attack's gradient sabotage (test build only; grad_attack.c). */
#ifndef SHOAL_WORKER_GRAD_ATTACK_H
#define SHOAL_WORKER_GRAD_ATTACK_H

/* Installs the attack SHOAL_GRAD_ATTACK names (nan, scale100, ascent100); 0 (also when unset), -1 for an
 * unknown value (printed). */
int grad_attack_install_from_env(void);

#endif
