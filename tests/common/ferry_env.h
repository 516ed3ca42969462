/*
 * ferry_env.h - reads the test harness's environment file
 * ($FERRY_ENV_DIR/env, shell-quoted KEY=VALUE lines written by
 * tests/harness/ferry_harness.py) for C integration tests.
 */
#ifndef FERRY_ENV_H
#define FERRY_ENV_H

/* Loads $FERRY_ENV_DIR/env once. Returns 0, or -1 with a message on stderr. */
int ferry_env_load(void);
/* Value of KEY (e.g. "FERRY_SRC_IMAP_PORT"), or NULL. Borrowed, static. */
const char *ferry_env_get(const char *key);
/* Password of a harness user from FERRY_USERS ("alice:alice-pw ..."); static. */
const char *ferry_env_password(const char *user);

#endif
