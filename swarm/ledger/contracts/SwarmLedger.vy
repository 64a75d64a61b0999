# pragma version 0.4.3
# pragma evm-version cancun
"""
@title SwarmLedger
@notice Membership and round ledger of one swarm-learning session.
        It records metadata only (never weights): members and their certificate
        fingerprints, the session configuration, each round's participant set
        with weights and update digests, the merged digest, who finished, and
        revocations. It enforces its own rules and emits an event for every
        change, so any site can audit a training run from the chain alone.
@dev    Accounts are SN (swarm network) nodes. An SN acts for the SL/swci nodes
        it registered (their "controller"). Bounds: MAX_MEMBERS members over the
        ledger's life, MAX_PARTICIPANTS ids per check-in batch and per round,
        node ids <= 128 bytes, endpoints <= 256 bytes, config JSON <= 4096 bytes.
        Storage stays bounded over a long training: a node's check-in and
        participation live in per-node slots that each round overwrites, and a
        round keeps three words (a hash of its participants, weights and update
        digests; its merged digest; when and in which block it was sealed, with
        its merge vote counts), plus one tally word per minority merged digest.
        The lists themselves are in the RoundSealed event of that block.
        Merged digest: each participant's first commit is a vote; the round's
        merged digest is the first one a strict majority of the sealed
        participants voted for (MergeAgreed), never merely the first committed,
        so one dishonest participant cannot set it. Once no digest can reach a
        majority any more the round's merge failed (MergeFailed).
        Gas (measured): see tests/ledger/test_ledger_contract.py; a full 256-id
        checkInAndSeal fits the usual 30M block gas limit.
"""

MAX_MEMBERS: constant(uint256) = 4096
MAX_PARTICIPANTS: constant(uint256) = 256
MAX_NODE_ID: constant(uint256) = 128
MAX_ENDPOINT: constant(uint256) = 256
MAX_CONFIG: constant(uint256) = 4096
MAX_REASON: constant(uint256) = 256

ROLE_SN: constant(uint8) = 1
ROLE_SL: constant(uint8) = 2
ROLE_SWCI: constant(uint8) = 3

STATUS_ACTIVE: constant(uint8) = 1
STATUS_INACTIVE: constant(uint8) = 2
STATUS_REVOKED: constant(uint8) = 3

# Weight 0: a participant that contributes no update (a node that finished
# training, checkinModelOnTrainEnd=inactive); it counts towards minPeers and
# receives the merged model.
MIN_WEIGHT: constant(uint32) = 0
MAX_WEIGHT: constant(uint32) = 100

# A node's latest check-in in one word: round | weight << 64 | flags. Each round
# rewrites the same non-zero slots (~3k gas) instead of filling fresh ones
# (~22k gas, and a trie that grows with every round).
ROUND_MASK: constant(uint256) = 18446744073709551615  # 2**64 - 1
WEIGHT_SHIFT: constant(uint256) = 64
WEIGHT_MASK: constant(uint256) = 4294967295  # 2**32 - 1
PARTICIPANT_FLAG: constant(uint256) = 2**96
CHECKED_IN_FLAG: constant(uint256) = 2**97  # non-zero even for weight 0
# A round's meta word: sealedAt | sealedBlock << 64 | checkInCount << 128
# | votes << 160 | topVotes << 176 | participantCount << 192 (votes: participants
# that committed a merged digest; topVotes: the most any one digest has).
BLOCK_SHIFT: constant(uint256) = 64
COUNT_SHIFT: constant(uint256) = 128
COUNT_MASK: constant(uint256) = 4294967295  # 2**32 - 1 (check-ins <= MAX_MEMBERS)
VOTES_SHIFT: constant(uint256) = 160
TOP_SHIFT: constant(uint256) = 176
VOTE_MASK: constant(uint256) = 65535
SIZE_SHIFT: constant(uint256) = 192
# participantIn: round | VOTED_FLAG once the participant's merged digest was counted.
VOTED_FLAG: constant(uint256) = 2**64

# mergeStatus() of a round
MERGE_UNSEALED: constant(uint8) = 0
MERGE_PENDING: constant(uint8) = 1  # no majority yet, one may still form
MERGE_AGREED: constant(uint8) = 2   # a strict majority committed rounds[round].merged
MERGE_FAILED: constant(uint8) = 3   # no digest can reach a majority any more

# Receipt bitmaps (several SN nodes): the first bitmap per (round, phase, node)
# counts; the set freezes once every participant's is in, or on freezeReceipts by
# any SN once a strict majority is in (the SNs wait out the grace first: block time
# cannot stand in for it, the embedded chain's runs ahead under load). Later bitmaps
# are refused. A board lives in one of RECEIPT_SLOTS ring slots:
# tag (round*4+phase) | count << 64 | frozen << 80.
RECEIPT_SLOTS: constant(uint256) = 64
TAG_MASK: constant(uint256) = 18446744073709551615
RCOUNT_SHIFT: constant(uint256) = 64
RCOUNT_MASK: constant(uint256) = 65535
FROZEN_FLAG: constant(uint256) = 2**80
MAX_REMAINING_S: constant(uint256) = 30

struct Member:
    nodeId: String[MAX_NODE_ID]
    role: uint8
    fingerprint: bytes32
    endpoint: String[MAX_ENDPOINT]
    status: uint8
    lastSeen: uint256
    controller: address

struct Round:
    record: bytes32  # keccak256(abi_encode(participants, weights, digests)); empty until sealed
    merged: bytes32  # empty until a strict majority of the participants committed it
    meta: uint256

event MemberRegistered:
    id: indexed(bytes32)
    nodeId: String[MAX_NODE_ID]
    role: uint8
    fingerprint: bytes32
    endpoint: String[MAX_ENDPOINT]
    controller: address
    isNew: bool

event StatusChanged:
    id: indexed(bytes32)
    status: uint8
    by: bytes32

event Configured:
    minPeers: uint256
    configJson: String[MAX_CONFIG]
    by: bytes32

# One event per check-in batch (not per id): fewer logs keep both the
# transaction and every poller's decoding cheaper.
event CheckedIn:
    round: indexed(uint64)
    ids: DynArray[bytes32, MAX_PARTICIPANTS]
    weights: DynArray[uint32, MAX_PARTICIPANTS]
    digests: DynArray[bytes32, MAX_PARTICIPANTS]
    by: bytes32

event RoundSealed:
    round: indexed(uint64)
    participants: DynArray[bytes32, MAX_PARTICIPANTS]
    weights: DynArray[uint32, MAX_PARTICIPANTS]
    digests: DynArray[bytes32, MAX_PARTICIPANTS]
    by: bytes32

# A participant's vote: its first commit while the round has no agreed digest.
event MergeCommitted:
    round: indexed(uint64)
    id: indexed(bytes32)
    digest: bytes32

# digest reached a strict majority of the round's participants: it is the round's record.
event MergeAgreed:
    round: indexed(uint64)
    digest: bytes32
    votes: uint256
    participants: uint256

# No digest can reach a majority any more (votes counted, the most for one digest).
event MergeFailed:
    round: indexed(uint64)
    votes: uint256
    topVotes: uint256
    participants: uint256

event MergeMismatch:
    round: indexed(uint64)
    id: indexed(bytes32)
    expected: bytes32
    actual: bytes32

# A participant's receipt bitmap (byte i: 1 = participant i's message arrived intact).
event ReceiptsSubmitted:
    round: indexed(uint64)
    phase: uint8
    id: indexed(bytes32)
    bits: Bytes[MAX_PARTICIPANTS]
    remainingS: uint256
    by: bytes32

# The bitmaps of (round, phase) are final: exactly the ReceiptsSubmitted before this.
event ReceiptsFrozen:
    round: indexed(uint64)
    phase: uint8
    count: uint256
    by: bytes32

event NodeFinished:
    id: indexed(bytes32)
    finishedCount: uint256

event Revoked:
    fingerprint: indexed(bytes32)
    id: indexed(bytes32)
    reason: String[MAX_REASON]
    by: bytes32

sentinel: public(address)
members: HashMap[bytes32, Member]
memberIds: DynArray[bytes32, MAX_MEMBERS]
# account -> SN member id it signs for
snIdOf: public(HashMap[address, bytes32])
# certificate fingerprint -> member id (a certificate names exactly one node)
idOfFingerprint: public(HashMap[bytes32, bytes32])
isRevoked: public(HashMap[bytes32, bool])

configured: public(bool)
minPeers: public(uint256)
configJson: public(String[MAX_CONFIG])

lastSealedRound: public(uint64)
rounds: HashMap[uint64, Round]
# id -> its latest check-in (round | weight | flags) and update digest
checkInMeta: HashMap[bytes32, uint256]
checkInDigest: HashMap[bytes32, bytes32]
# id -> the last round it was sealed into (a late commitMerged still finds it), with
# VOTED_FLAG once its merged digest was counted
participantIn: HashMap[bytes32, uint256]
# keccak256(abi_encode(round, digest)) -> participants that voted for digest; the
# agreed digest's word is cleared once agreed (rounds[round].merged holds it)
mergeVotes: HashMap[bytes32, uint256]

# (round, phase) receipt boards in a ring (see RECEIPT_SLOTS), and per node the
# latest round*4+phase it submitted for (the first bitmap wins).
receiptBoards: HashMap[uint256, uint256]
lastReceipt: HashMap[bytes32, uint256]

finishedCount: public(uint256)
isFinished: public(HashMap[bytes32, bool])


@deploy
def __init__(nodeId: String[MAX_NODE_ID], fingerprint: bytes32, endpoint: String[MAX_ENDPOINT]):
    self.sentinel = msg.sender
    self.snIdOf[msg.sender] = self._register(nodeId, ROLE_SN, fingerprint, endpoint, msg.sender)


# ---------------------------------------------------------------- internals

@internal
def _caller(activeOnly: bool) -> bytes32:
    """Member id of the calling SN account; never a revoked one."""
    sid: bytes32 = self.snIdOf[msg.sender]
    assert sid != empty(bytes32), "caller is not a member"
    status: uint8 = self.members[sid].status
    assert status != STATUS_REVOKED, "caller revoked"
    assert status == STATUS_ACTIVE or not activeOnly, "caller not active"
    self.members[sid].lastSeen = block.timestamp
    return sid


@internal
def _actor() -> bytes32:
    """Member id of the calling SN account; it must be an active SN member."""
    return self._caller(True)


@internal
@view
def _requireController(id: bytes32):
    assert self.members[id].role != 0, "unknown member"
    assert self.members[id].controller == msg.sender, "not controller"


@internal
def _register(nodeId: String[MAX_NODE_ID], role: uint8, fingerprint: bytes32,
              endpoint: String[MAX_ENDPOINT], controller: address) -> bytes32:
    assert len(nodeId) > 0, "empty node id"
    assert fingerprint != empty(bytes32), "empty fingerprint"
    assert controller != empty(address), "empty controller"
    assert not self.isRevoked[fingerprint], "fingerprint revoked"
    id: bytes32 = keccak256(nodeId)
    # Read single fields: copying the whole struct would load both strings.
    oldRole: uint8 = self.members[id].role
    isNew: bool = oldRole == 0
    if isNew:
        assert self.idOfFingerprint[fingerprint] == empty(bytes32), "fingerprint already registered"
        assert len(self.memberIds) < MAX_MEMBERS, "member list full"
        self.memberIds.append(id)
        self.idOfFingerprint[fingerprint] = id
        self.members[id] = Member(
            nodeId=nodeId, role=role, fingerprint=fingerprint, endpoint=endpoint,
            status=STATUS_ACTIVE, lastSeen=block.timestamp, controller=controller)
    else:
        # A restart or a move to another SN re-registers: same certificate only.
        assert self.members[id].status != STATUS_REVOKED, "member revoked"
        assert self.members[id].fingerprint == fingerprint, "fingerprint mismatch"
        assert oldRole == role, "role mismatch"
        self.members[id].endpoint = endpoint
        self.members[id].status = STATUS_ACTIVE
        self.members[id].lastSeen = block.timestamp
        self.members[id].controller = controller
    log MemberRegistered(id=id, nodeId=nodeId, role=role, fingerprint=fingerprint,
                         endpoint=endpoint, controller=controller, isNew=isNew)
    return id


@internal
@view
def _requireOpen(round: uint64):
    # Once minPeers nodes have finished, the swarm is done: no round may start, so
    # every node loads the same final model.
    assert not (self.configured and self.finishedCount >= self.minPeers), "swarm done"
    assert round != 0, "round must be >= 1"
    assert round != self.lastSealedRound, "round already sealed"
    assert round > self.lastSealedRound, "round older than last sealed"


@internal
def _checkIn(actor: bytes32, round: uint64, ids: DynArray[bytes32, MAX_PARTICIPANTS],
             weights: DynArray[uint32, MAX_PARTICIPANTS],
             digests: DynArray[bytes32, MAX_PARTICIPANTS]):
    n: uint256 = len(ids)
    assert n > 0, "no ids"
    assert len(weights) == n and len(digests) == n, "length mismatch"
    self._requireOpen(round)
    r: uint256 = convert(round, uint256)
    for i: uint256 in range(n, bound=MAX_PARTICIPANTS):
        id: bytes32 = ids[i]
        w: uint32 = weights[i]
        assert self.members[id].role == ROLE_SL, "not an sl member"
        assert self.members[id].controller == msg.sender, "not controller"
        status: uint8 = self.members[id].status
        assert status != STATUS_REVOKED, "member revoked"
        assert status == STATUS_ACTIVE, "member not active"
        assert w >= MIN_WEIGHT and w <= MAX_WEIGHT, "weight out of range"
        assert digests[i] != empty(bytes32), "empty digest"
        # A check-in for another open round is replaced: a node takes part in one round at a time.
        assert self.checkInMeta[id] & ROUND_MASK != r, "already checked in"
        self.checkInMeta[id] = r | (convert(w, uint256) << WEIGHT_SHIFT) | CHECKED_IN_FLAG
        self.checkInDigest[id] = digests[i]
    self.rounds[round].meta += n << COUNT_SHIFT
    log CheckedIn(round=round, ids=ids, weights=weights, digests=digests, by=actor)


@internal
def _seal(actor: bytes32, round: uint64, ids: DynArray[bytes32, MAX_PARTICIPANTS]):
    assert self.configured, "not configured"
    self._requireOpen(round)
    assert len(ids) >= self.minPeers, "below minPeers"
    r: uint256 = convert(round, uint256)
    weights: DynArray[uint32, MAX_PARTICIPANTS] = []
    digests: DynArray[bytes32, MAX_PARTICIPANTS] = []
    for id: bytes32 in ids:
        meta: uint256 = self.checkInMeta[id]
        assert meta & ROUND_MASK == r, "not checked in"
        assert meta & PARTICIPANT_FLAG == 0, "duplicate participant"
        # A member revoked after checking in must not enter the round.
        assert self.members[id].status != STATUS_REVOKED, "member revoked"
        self.checkInMeta[id] = meta | PARTICIPANT_FLAG
        self.participantIn[id] = r
        weights.append(convert((meta >> WEIGHT_SHIFT) & WEIGHT_MASK, uint32))
        digests.append(self.checkInDigest[id])
    self.lastSealedRound = round
    self.rounds[round].record = keccak256(abi_encode(ids, weights, digests))
    # Keeps the check-in count; the vote counts start at 0.
    self.rounds[round].meta = (self.rounds[round].meta >> COUNT_SHIFT << COUNT_SHIFT) | block.timestamp \
        | (block.number << BLOCK_SHIFT) | (len(ids) << SIZE_SHIFT)
    log RoundSealed(round=round, participants=ids, weights=weights, digests=digests, by=actor)


# ---------------------------------------------------------------- membership

@external
def registerSN(nodeId: String[MAX_NODE_ID], fingerprint: bytes32,
               endpoint: String[MAX_ENDPOINT], account: address):
    """Admit (or re-admit) an SN node that signs with `account`."""
    self._actor()
    bound: bytes32 = self.snIdOf[account]
    id: bytes32 = keccak256(nodeId)
    assert bound == empty(bytes32) or bound == id, "account already bound"
    old: address = self.members[id].controller
    self._register(nodeId, ROLE_SN, fingerprint, endpoint, account)
    if old != empty(address) and old != account:
        self.snIdOf[old] = empty(bytes32)
    self.snIdOf[account] = id


@external
def registerNode(nodeId: String[MAX_NODE_ID], role: uint8, fingerprint: bytes32,
                 endpoint: String[MAX_ENDPOINT]):
    """Register (or re-register) an SL/swci node; the caller becomes its controller."""
    self._actor()
    assert role == ROLE_SL or role == ROLE_SWCI, "role must be sl or swci"
    self._register(nodeId, role, fingerprint, endpoint, msg.sender)


@external
def setStatus(id: bytes32, status: uint8):
    """Mark a member active or inactive; revocation goes through revoke().
    An inactive SN may still call this, so it can reactivate itself."""
    actor: bytes32 = self._caller(False)
    self._requireController(id)
    assert status == STATUS_ACTIVE or status == STATUS_INACTIVE, "status must be active or inactive"
    assert self.members[id].status != STATUS_REVOKED, "member revoked"
    self.members[id].status = status
    self.members[id].lastSeen = block.timestamp
    log StatusChanged(id=id, status=status, by=actor)


@external
def revoke(fingerprint: bytes32, reason: String[MAX_REASON]):
    """Revoke a certificate and the member registered with it, for good."""
    actor: bytes32 = self._actor()
    assert fingerprint != empty(bytes32), "empty fingerprint"
    assert not self.isRevoked[fingerprint], "already revoked"
    self.isRevoked[fingerprint] = True
    id: bytes32 = self.idOfFingerprint[fingerprint]
    if id != empty(bytes32):
        self.members[id].status = STATUS_REVOKED
    log Revoked(fingerprint=fingerprint, id=id, reason=reason, by=actor)


# ---------------------------------------------------------------- session

@external
def configure(minPeers: uint256, configJson: String[MAX_CONFIG]):
    """Fix the session configuration, once per ledger."""
    actor: bytes32 = self._actor()
    assert not self.configured, "already configured"
    assert minPeers >= 1, "minPeers must be >= 1"
    assert minPeers <= MAX_PARTICIPANTS, "minPeers above participant bound"
    self.configured = True
    self.minPeers = minPeers
    self.configJson = configJson
    log Configured(minPeers=minPeers, configJson=configJson, by=actor)


@external
def checkIn(round: uint64, ids: DynArray[bytes32, MAX_PARTICIPANTS],
            weights: DynArray[uint32, MAX_PARTICIPANTS],
            digests: DynArray[bytes32, MAX_PARTICIPANTS]):
    """Check in the caller's nodes for an open round (one batch, one tx)."""
    self._checkIn(self._actor(), round, ids, weights, digests)


@external
def seal(round: uint64, ids: DynArray[bytes32, MAX_PARTICIPANTS]):
    """Fix a round's participant set; rounds seal in strictly increasing order."""
    self._seal(self._actor(), round, ids)


@external
def checkInAndSeal(round: uint64, ids: DynArray[bytes32, MAX_PARTICIPANTS],
                   weights: DynArray[uint32, MAX_PARTICIPANTS],
                   digests: DynArray[bytes32, MAX_PARTICIPANTS],
                   sealIds: DynArray[bytes32, MAX_PARTICIPANTS]):
    """Single-SN fast path: a whole round's control plane in one transaction."""
    actor: bytes32 = self._actor()
    self._checkIn(actor, round, ids, weights, digests)
    self._seal(actor, round, sealIds)


@internal
@pure
def _merge(votes: uint256, top: uint256, size: uint256) -> uint8:
    """PENDING while some digest can still reach a strict majority, else FAILED (the
    caller checks for an agreed digest first). Monotone: once failed, always failed."""
    if 2 * (top + size - votes) > size:
        return MERGE_PENDING
    return MERGE_FAILED


@internal
def _commitMerged(round: uint64, id: bytes32, digest: bytes32):
    self._requireController(id)
    assert self.members[id].status != STATUS_REVOKED, "member revoked"
    assert digest != empty(bytes32), "empty digest"
    seat: uint256 = self.participantIn[id]
    assert seat & ROUND_MASK == convert(round, uint256), "not a participant"
    self.members[id].lastSeen = block.timestamp
    merged: bytes32 = self.rounds[round].merged
    if merged != empty(bytes32):
        if merged != digest:
            # Keep the evidence instead of reverting: auditors need to see it.
            log MergeMismatch(round=round, id=id, expected=merged, actual=digest)
        return
    if seat & VOTED_FLAG != 0:
        return  # one vote per participant: a retry (or a change of mind) is not counted
    self.participantIn[id] = seat | VOTED_FLAG
    log MergeCommitted(round=round, id=id, digest=digest)
    meta: uint256 = self.rounds[round].meta
    size: uint256 = meta >> SIZE_SHIFT
    votes: uint256 = ((meta >> VOTES_SHIFT) & VOTE_MASK) + 1
    top: uint256 = (meta >> TOP_SHIFT) & VOTE_MASK
    wasPending: bool = self._merge(votes - 1, top, size) == MERGE_PENDING
    slot: bytes32 = keccak256(abi_encode(round, digest))
    count: uint256 = self.mergeVotes[slot] + 1
    top = max(top, count)
    self.rounds[round].meta = (meta & ~((VOTE_MASK << VOTES_SHIFT) | (VOTE_MASK << TOP_SHIFT))) \
        | (votes << VOTES_SHIFT) | (top << TOP_SHIFT)
    if 2 * count > size:
        # The first digest with a strict majority is the record; its tally word is freed.
        self.rounds[round].merged = digest
        self.mergeVotes[slot] = 0
        log MergeAgreed(round=round, digest=digest, votes=count, participants=size)
        return
    self.mergeVotes[slot] = count
    if wasPending and self._merge(votes, top, size) == MERGE_FAILED:
        log MergeFailed(round=round, votes=votes, topVotes=top, participants=size)


@external
def commitMerged(round: uint64, ids: DynArray[bytes32, MAX_PARTICIPANTS],
                 digests: DynArray[bytes32, MAX_PARTICIPANTS]):
    """Record participants' merged digests (one batch, one tx). Each participant's first
    commit while the round has no agreed digest is a vote (MergeCommitted); the first
    digest a strict majority of the round's participants voted for becomes the round's
    merged digest (MergeAgreed). Later commits that differ from it emit MergeMismatch;
    an equal one, or a participant's second vote, is a no-op."""
    self._actor()
    assert len(digests) == len(ids), "length mismatch"
    assert self.rounds[round].record != empty(bytes32), "round not sealed"
    for i: uint256 in range(len(ids), bound=MAX_PARTICIPANTS):
        self._commitMerged(round, ids[i], digests[i])


@internal
@view
def _board(round: uint64, phase: uint8) -> (uint256, uint256):
    """(ring slot, board word) of a sealed round's receipts; a fresh word if the slot
    holds another round's."""
    assert phase == 1 or phase == 2, "phase must be 1 or 2"
    assert self.rounds[round].record != empty(bytes32), "round not sealed"
    tag: uint256 = convert(round, uint256) * 4 + convert(phase, uint256)
    slot: uint256 = tag % RECEIPT_SLOTS
    word: uint256 = self.receiptBoards[slot]
    if word & TAG_MASK != tag:
        word = tag
    return slot, word


@external
def submitReceipts(round: uint64, phase: uint8, id: bytes32, bits: Bytes[MAX_PARTICIPANTS],
                   remainingS: uint256):
    """Record participant id's receipt bitmap for (round, phase): the first one counts,
    any later one is refused, as is one after the set froze."""
    actor: bytes32 = self._actor()
    self._requireController(id)
    assert self.members[id].status != STATUS_REVOKED, "member revoked"
    assert self.participantIn[id] & ROUND_MASK == convert(round, uint256), "not a participant"
    slot: uint256 = 0
    word: uint256 = 0
    slot, word = self._board(round, phase)
    size: uint256 = self.rounds[round].meta >> SIZE_SHIFT
    assert len(bits) == size, "bitmap length is not the participant count"
    for i: uint256 in range(size, bound=MAX_PARTICIPANTS):
        assert convert(slice(bits, i, 1), uint256) <= 1, "bitmap bytes are 0 or 1"
    tag: uint256 = word & TAG_MASK
    assert self.lastReceipt[id] < tag, "receipts already submitted"
    assert word & FROZEN_FLAG == 0, "receipts frozen"
    self.lastReceipt[id] = tag
    count: uint256 = ((word >> RCOUNT_SHIFT) & RCOUNT_MASK) + 1
    word = tag | (count << RCOUNT_SHIFT)
    log ReceiptsSubmitted(round=round, phase=phase, id=id, bits=bits,
                          remainingS=min(remainingS, MAX_REMAINING_S), by=actor)
    if count == size:
        word = word | FROZEN_FLAG
        log ReceiptsFrozen(round=round, phase=phase, count=count, by=actor)
    self.receiptBoards[slot] = word


@external
def freezeReceipts(round: uint64, phase: uint8):
    """Freeze (round, phase)'s receipts once a strict majority is in (the caller has
    waited out the grace)."""
    actor: bytes32 = self._actor()
    slot: uint256 = 0
    word: uint256 = 0
    slot, word = self._board(round, phase)
    assert word & FROZEN_FLAG == 0, "receipts frozen"
    count: uint256 = (word >> RCOUNT_SHIFT) & RCOUNT_MASK
    assert count > 0, "no receipts yet"
    size: uint256 = self.rounds[round].meta >> SIZE_SHIFT
    assert 2 * count > size, "no majority of receipts yet"
    self.receiptBoards[slot] = word | FROZEN_FLAG
    log ReceiptsFrozen(round=round, phase=phase, count=count, by=actor)


@external
def markFinished(id: bytes32):
    """Record that a node finished its epochs."""
    self._actor()
    self._requireController(id)
    assert self.members[id].status != STATUS_REVOKED, "member revoked"
    assert not self.isFinished[id], "already finished"
    self.isFinished[id] = True
    self.finishedCount += 1
    self.members[id].lastSeen = block.timestamp
    log NodeFinished(id=id, finishedCount=self.finishedCount)


# ---------------------------------------------------------------- views

@external
@view
def getMember(id: bytes32) -> Member:
    return self.members[id]


@external
@view
def memberCount() -> uint256:
    return len(self.memberIds)


@external
@view
def memberIdAt(index: uint256) -> bytes32:
    assert index < len(self.memberIds), "index out of range"
    return self.memberIds[index]


@external
@view
def getConfig() -> (bool, uint256, String[MAX_CONFIG]):
    return self.configured, self.minPeers, self.configJson


@external
@view
def checkInOf(round: uint64, id: bytes32) -> (uint32, bytes32, bool):
    """(weight, digest, sealed as participant) of a node's check-in for `round`, while it is
    the node's latest one; an empty digest means none."""
    meta: uint256 = self.checkInMeta[id]
    if meta & ROUND_MASK != convert(round, uint256):
        return 0, empty(bytes32), False
    return convert((meta >> WEIGHT_SHIFT) & WEIGHT_MASK, uint32), self.checkInDigest[id], meta & PARTICIPANT_FLAG != 0


@external
@view
def roundInfo(round: uint64) -> (bool, bytes32, bytes32, uint256, uint256, uint256):
    """(sealed, record hash, merged digest, sealedAt, sealedBlock, checkInCount). The
    participants, weights and digests are in the RoundSealed event of sealedBlock, and
    keccak256(abi_encode(participants, weights, digests)) equals the record hash."""
    r: Round = self.rounds[round]
    return (r.record != empty(bytes32), r.record, r.merged, r.meta & ROUND_MASK,
            (r.meta >> BLOCK_SHIFT) & ROUND_MASK, (r.meta >> COUNT_SHIFT) & COUNT_MASK)


@external
@view
def mergeStatus(round: uint64) -> (uint8, bytes32, uint256, uint256, uint256):
    """(status, agreed digest, votes, most votes for one digest, participants) of a
    round's merged digest; status 0 unsealed, 1 pending, 2 agreed, 3 failed."""
    r: Round = self.rounds[round]
    if r.record == empty(bytes32):
        return MERGE_UNSEALED, empty(bytes32), 0, 0, 0
    votes: uint256 = (r.meta >> VOTES_SHIFT) & VOTE_MASK
    top: uint256 = (r.meta >> TOP_SHIFT) & VOTE_MASK
    size: uint256 = r.meta >> SIZE_SHIFT
    if r.merged != empty(bytes32):
        return MERGE_AGREED, r.merged, votes, top, size
    return self._merge(votes, top, size), empty(bytes32), votes, top, size


@external
@view
def votesFor(round: uint64, digest: bytes32) -> uint256:
    """Votes for a digest that has not (yet) been agreed."""
    return self.mergeVotes[keccak256(abi_encode(round, digest))]
