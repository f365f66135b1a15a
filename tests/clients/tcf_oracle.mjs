#!/usr/bin/env node
// The IAB's own TC string library (@iabtechlabtcf/core), unchanged, as an independent oracle for
// Confiance's TCF encoder and decoder (crates/core/src/consent/tcf).
//
//   node tests/clients/tcf_oracle.mjs < requests.jsonl > responses.jsonl
//
// Reads one JSON request per line on stdin and answers each on stdout, in order:
//
//   {"op":"decode","tc":"CPc..."}        -> one line {"model": MODEL} or {"error": "..."}
//   {"op":"random","seed":N,"count":K}   -> K lines {"tc": "...", "model": MODEL}, each a random
//                                           TCModel encoded by the library and decoded back
//
// MODEL is the normalised JSON that Confiance's `TcModel` serialises to: sets are sorted id
// lists, times are deciseconds since the Unix epoch, an absent optional segment is null. Both
// sides produce exactly this shape, so the Rust test compares them as JSON values.
//
// The library is found in CONFIANCE_TEST_NODE_MODULES (the folder that `scripts/test` fills with
// `npm ci`), else in tests/clients/node_modules. Diagnostics go to stderr; exit status 2 when
// the library cannot be loaded.
//
// Encoding with the library needs a Global Vendor List (GVL): it drops consent and legitimate-
// interest signals of vendors the GVL does not know, keeps only publisher restrictions that the
// GVL's declarations allow, and takes the consent language, vendor list version and policy
// version from the GVL. There is no network here, so each random model gets a synthetic GVL
// built in memory, whose vendors declare every purpose for consent, legitimate interest and as
// flexible, so that nothing random is filtered out except by rules of the TCF itself (no
// legitimate interest for purposes 1 and 3-6, no signal for a vendor missing from the GVL).

import { createInterface } from 'node:readline'
import { readFileSync, existsSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const nodeModules = process.env.CONFIANCE_TEST_NODE_MODULES || join(here, 'node_modules')
const packageDir = join(nodeModules, '@iabtechlabtcf', 'core')
if (!existsSync(join(packageDir, 'package.json'))) {
  process.stderr.write(
    `tcf_oracle: @iabtechlabtcf/core is not installed in ${nodeModules}: run scripts/test\n`,
  )
  process.exit(2)
}
const manifest = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8'))
const { GVL, TCModel, TCString, PurposeRestriction, Segment } = await import(
  pathToFileURL(join(packageDir, manifest.exports['.'].import)).href
)

const PURPOSES = 24
const SPECIAL_FEATURES = 12
const RESTRICTION_TYPES = ['not_allowed', 'require_consent', 'require_legitimate_interest']

// ---- normalised model ------------------------------------------------------------------------

const ids = (vector) => Array.from(vector.values()).sort((a, b) => a - b)
const deciseconds = (date) => Math.round(date.getTime() / 100)

function restrictions(prVector) {
  return prVector
    .getRestrictions()
    .map((r) => ({
      purpose: r.purposeId,
      restriction_type: RESTRICTION_TYPES[r.restrictionType],
      vendors: prVector.getVendors(r),
    }))
    .filter((r) => r.vendors.length > 0)
    .sort((a, b) => a.purpose - b.purpose || RESTRICTION_TYPES.indexOf(a.restriction_type) -
      RESTRICTION_TYPES.indexOf(b.restriction_type))
}

/** The library's decoded model as Confiance's normalised JSON. */
function normalise(m) {
  if (m.version !== 2) throw new Error(`version ${m.version} is not TCF v2`)
  // A decoded vector remembers how many bits it was read from; a segment that was absent
  // leaves its vectors at their initial length 0.
  const disclosed = m.vendorsDisclosed.bitLength > 0
  const publisherTc = m.publisherConsents.bitLength > 0
  return {
    created: deciseconds(m.created),
    last_updated: deciseconds(m.lastUpdated),
    cmp_id: m.cmpId,
    cmp_version: m.cmpVersion,
    consent_screen: m.consentScreen,
    consent_language: m.consentLanguage,
    vendor_list_version: m.vendorListVersion,
    policy_version: m.policyVersion,
    is_service_specific: m.isServiceSpecific,
    use_non_standard_texts: m.useNonStandardTexts,
    special_feature_optins: ids(m.specialFeatureOptins),
    purpose_consents: ids(m.purposeConsents),
    purpose_legitimate_interests: ids(m.purposeLegitimateInterests),
    purpose_one_treatment: m.purposeOneTreatment,
    publisher_country_code: m.publisherCountryCode,
    vendor_consents: ids(m.vendorConsents),
    vendor_legitimate_interests: ids(m.vendorLegitimateInterests),
    publisher_restrictions: restrictions(m.publisherRestrictions),
    disclosed_vendors: disclosed ? ids(m.vendorsDisclosed) : null,
    publisher_tc: publisherTc
      ? {
          purpose_consents: ids(m.publisherConsents),
          purpose_legitimate_interests: ids(m.publisherLegitimateInterests),
          custom_purposes: m.numCustomPurposes,
          custom_purpose_consents: ids(m.publisherCustomConsents),
          custom_purpose_legitimate_interests: ids(m.publisherCustomLegitimateInterests),
        }
      : null,
  }
}

// ---- random models -----------------------------------------------------------------------------

/** mulberry32: a small seeded PRNG, so that a failing seed can be replayed. */
function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function randomTools(seed) {
  const next = prng(seed)
  const int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1))
  const chance = (p) => next() < p
  const pick = (list) => list[int(0, list.length - 1)]
  const subset = (n, p = next()) => {
    const out = []
    for (let i = 1; i <= n; i++) if (chance(p)) out.push(i)
    return out
  }
  // Vendor id sets in the shapes that exercise both vector encodings: empty, dense (bit
  // field), a few scattered ids, and long runs (range encoding).
  const vendors = (universe) => {
    if (universe.length === 0) return []
    switch (int(0, 4)) {
      case 0:
        return []
      case 1: {
        const p = next()
        return universe.filter(() => chance(p))
      }
      case 2:
        return Array.from({ length: int(1, 8) }, () => pick(universe))
      case 3: {
        const out = []
        for (let runs = int(1, 6); runs > 0; runs--) {
          const start = int(0, universe.length - 1)
          out.push(...universe.slice(start, start + int(1, 300)))
        }
        return out
      }
      default:
        return Array.from({ length: int(1, 40) }, () => int(1, 65535))
    }
  }
  return { next, int, chance, pick, subset, vendors }
}

const LANGUAGES = []
GVL.consentLanguages.forEach((lang) => LANGUAGES.push(lang))

const ALL_PURPOSES = Array.from({ length: PURPOSES }, (_, i) => i + 1)
const named = (n) =>
  Object.fromEntries(
    Array.from({ length: n }, (_, i) => [i + 1, { id: i + 1, name: `item ${i + 1}`, description: '' }]),
  )
const DECLARATIONS = {
  purposes: named(PURPOSES),
  specialPurposes: named(2),
  features: named(3),
  specialFeatures: named(SPECIAL_FEATURES),
  stacks: {},
  dataCategories: {},
}
// Every language is "cached", so that the library never tries to download translations when it
// clones a GVL whose language is not English.
for (const lang of LANGUAGES) GVL.LANGUAGE_CACHE.set(lang, { ...DECLARATIONS })

/** A synthetic vendor list: ids 1..n with random holes, plus a few scattered high ids. */
function randomGvl(r) {
  const vendorIds = []
  const n = r.pick([0, r.int(1, 50), r.int(1, 700)])
  const holes = r.chance(0.5) ? 0 : r.next() * 0.3
  for (let id = 1; id <= n; id++) if (!r.chance(holes)) vendorIds.push(id)
  for (let k = r.int(0, 4); k > 0; k--) vendorIds.push(r.int(n + 1, 65535))
  const vendors = {}
  for (const id of vendorIds) {
    vendors[id] = {
      id,
      name: `vendor ${id}`,
      purposes: ALL_PURPOSES,
      legIntPurposes: ALL_PURPOSES,
      flexiblePurposes: ALL_PURPOSES,
      specialPurposes: [],
      features: [],
      specialFeatures: [],
      policyUrl: 'https://vendor.invalid/privacy',
    }
  }
  GVL.emptyCache()
  const gvl = new GVL(
    {
      gvlSpecificationVersion: 3,
      vendorListVersion: r.int(1, 4095),
      tcfPolicyVersion: r.pick([4, 5]),
      lastUpdated: '2026-01-01T00:00:00Z',
      ...DECLARATIONS,
      vendors,
    },
    { language: r.pick(LANGUAGES) },
  )
  return { gvl, vendorIds: Array.from(new Set(vendorIds)).sort((a, b) => a - b) }
}

function randomModel(r) {
  const { gvl, vendorIds } = randomGvl(r)
  const m = new TCModel(gvl)
  const maxDs = 2 ** 36 - 1
  m.created = new Date(r.int(0, maxDs) * 100)
  m.lastUpdated = new Date(r.int(0, maxDs) * 100)
  m.cmpId = r.int(2, 4095)
  m.cmpVersion = r.int(0, 4095)
  m.consentScreen = r.int(0, 63)
  m.isServiceSpecific = r.chance(0.5)
  m.useNonStandardTexts = r.chance(0.5)
  m.purposeOneTreatment = r.chance(0.5)
  const letter = () => String.fromCharCode(65 + r.int(0, 25))
  m.publisherCountryCode = letter() + letter()
  m.specialFeatureOptins.set(r.subset(SPECIAL_FEATURES))
  m.purposeConsents.set(r.subset(PURPOSES))
  m.purposeLegitimateInterests.set(r.subset(PURPOSES))
  m.vendorConsents.set(r.vendors(vendorIds))
  m.vendorLegitimateInterests.set(r.vendors(vendorIds))
  for (let k = r.pick([0, 0, r.int(1, 3), r.int(1, 12)]); k > 0; k--) {
    const restriction = new PurposeRestriction(r.int(1, PURPOSES), r.int(0, 2))
    for (const id of r.vendors(vendorIds)) m.publisherRestrictions.add(id, restriction)
  }
  m.vendorsDisclosed.set(r.vendors(r.chance(0.5) ? vendorIds : Array.from({ length: 2000 }, (_, i) => i + 1)))
  m.vendorsAllowed.set(r.vendors(vendorIds))
  m.publisherConsents.set(r.subset(PURPOSES))
  m.publisherLegitimateInterests.set(r.subset(PURPOSES))
  const custom = r.pick([0, r.int(1, 8), r.int(1, 63)])
  m.numCustomPurposes = custom
  m.publisherCustomConsents.set(r.subset(custom))
  m.publisherCustomLegitimateInterests.set(r.subset(custom))
  m.supportOOB = r.chance(0.5)

  // Which segments: the library's own choice (it depends on isServiceSpecific, isForVendors
  // and supportOOB), or an explicit list in a random order, sometimes with the deprecated
  // allowed-vendors segment that Confiance skips.
  if (r.chance(0.4)) return TCString.encode(m, { isForVendors: r.chance(0.5) })
  const optional = []
  if (r.chance(0.6)) optional.push(Segment.VENDORS_DISCLOSED)
  if (r.chance(0.5)) optional.push(Segment.PUBLISHER_TC)
  if (r.chance(0.15)) optional.push(Segment.VENDORS_ALLOWED)
  optional.sort(() => r.next() - 0.5)
  return TCString.encode(m, { segments: [Segment.CORE, ...optional] })
}

// ---- requests ----------------------------------------------------------------------------------

const write = (value) => process.stdout.write(JSON.stringify(value) + '\n')

function handle(request) {
  switch (request.op) {
    case 'decode':
      try {
        write({ model: normalise(TCString.decode(request.tc)) })
      } catch (err) {
        write({ error: String(err && err.message ? err.message : err) })
      }
      break
    case 'random': {
      const r = randomTools(request.seed)
      for (let i = 0; i < request.count; i++) {
        const tc = randomModel(r)
        write({ tc, model: normalise(TCString.decode(tc)) })
      }
      break
    }
    default:
      write({ error: `unknown op ${JSON.stringify(request.op)}` })
  }
}

for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (line.trim() === '') continue
  handle(JSON.parse(line))
}
