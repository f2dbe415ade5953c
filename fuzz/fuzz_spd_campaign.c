/*
 * Fuzz target for the campaign spec parser of sealpostd
 * (apps/sealpostd/sender.c, spd_campaign_spec_parse): what POST
 * /v1/campaigns accepts as message templates, recipient field and audience,
 * and what the workers compile again from the store.
 *
 * The first byte's low bit picks the channel kind (email or SMS); the rest is
 * the JSON document. Properties:
 *   - a refused spec says why, and leaves nothing behind;
 *   - an accepted one has a recipient field that is one of the tenant's PII
 *     fields, an audience of a known kind within its limits, and its
 *     serialised form parses again to an accepted spec with the same audience.
 */
#include "fuzz_util.h"

#include "daemon.h"

FUZZ_INITIALIZE_LIBRARY()

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    sp_channel_kind kind = (data[0] & 1) ? SP_CHANNEL_SMS : SP_CHANNEL_EMAIL;
    json_t *doc = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, NULL);
    if (doc == NULL) return 0;
    spd_settings *settings = fuzz_alloc(sizeof *settings);
    memset(settings, 0, sizeof *settings);
    memcpy(settings->pii[0].name, "email", sizeof "email");
    settings->pii[0].kind = SP_VAULT_FIELD_EMAIL;
    memcpy(settings->pii[1].name, "phone", sizeof "phone");
    settings->pii[1].kind = SP_VAULT_FIELD_PHONE;
    settings->n_pii = 2;
    spd_campaign_spec *spec = NULL;
    char err[320] = "";
    sp_error rc = spd_campaign_spec_parse(doc, settings, kind, &spec, err, sizeof err);
    if (rc != SP_OK) {
        FUZZ_CHECK(spec == NULL);
        FUZZ_CHECK(rc == SP_ERR_NO_MEMORY || err[0] != '\0');
    } else {
        sp_store_audience aud;
        spd_campaign_spec_audience(spec, &aud);
        FUZZ_CHECK(aud.kind == SP_STORE_AUDIENCE_ALL || aud.kind == SP_STORE_AUDIENCE_IDS ||
                   aud.kind == SP_STORE_AUDIENCE_ATTRIBUTE);
        if (aud.kind == SP_STORE_AUDIENCE_IDS) FUZZ_CHECK(aud.n_ids >= 1 && aud.n_ids <= SP_STORE_MAX_AUDIENCE_IDS);
        if (aud.kind == SP_STORE_AUDIENCE_ATTRIBUTE) FUZZ_CHECK((aud.text != NULL) != (aud.number != NULL));
        /* what the store keeps is what the workers parse again */
        char *text = json_dumps(doc, JSON_COMPACT);
        FUZZ_CHECK(text != NULL);
        json_t *again = json_loads(text, 0, NULL);
        FUZZ_CHECK(again != NULL);
        spd_campaign_spec *spec2 = NULL;
        FUZZ_CHECK(spd_campaign_spec_parse(again, settings, kind, &spec2, err, sizeof err) == SP_OK);
        sp_store_audience aud2;
        spd_campaign_spec_audience(spec2, &aud2);
        FUZZ_CHECK(aud2.kind == aud.kind && aud2.n_ids == aud.n_ids);
        spd_campaign_spec_free(spec2);
        json_decref(again);
        json_free_t jfree = NULL;
        json_get_alloc_funcs(NULL, &jfree);
        jfree(text);
        spd_campaign_spec_free(spec);
    }
    free(settings);
    json_decref(doc);
    return 0;
}
